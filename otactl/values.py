"""Checks for the numbers an operator gives on the command line: `--device-timeout nan` never times
out, `--max-concurrent 0` would mean "no limit" and -1 "never send". Each refusal is one
OtaError("bad_arguments", ...) naming the flag.

    seconds("--device-timeout", args.device_timeout)         # finite, > 0
    count("--max-concurrent", args.max_concurrent)            # integer >= 1
    fraction("--success-threshold", args.success_threshold)   # finite, 0..1
"""
import math

from ota.errors import OtaError

MAX_SECONDS = 7 * 86400  # a week: beyond it a timeout is a typo, and time.monotonic() + it stays exact


def _number(flag, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OtaError("bad_arguments", "%s must be a finite number, not %r" % (flag, value))
    return value


def seconds(flag, value, allow_none=False):
    if value is None and allow_none:
        return None
    _number(flag, value)
    if not 0 < value <= MAX_SECONDS:
        raise OtaError("bad_arguments", "%s must be more than 0 and at most %d seconds, not %g"
                       % (flag, MAX_SECONDS, value))
    return float(value)


def count(flag, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OtaError("bad_arguments", "%s must be a whole number of at least 1, not %r" % (flag, value))
    return value


def fraction(flag, value):
    _number(flag, value)
    if not 0 <= value <= 1:
        raise OtaError("bad_arguments", "%s is a fraction in [0, 1], not %s" % (flag, value))
    return float(value)
