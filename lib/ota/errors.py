# One small error type for bad data, carrying a stable reason code (README "Reason codes").
# I/O problems stay OSError; a stage that turns an OSError into a reason code says so.
import errno


class OtaError(Exception):
    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        return self.reason + ": " + self.detail if self.detail else self.reason


try:
    _TIMEOUT_TYPES = (TimeoutError,)  # CPython raises it for socket timeouts, with errno None
except NameError:
    _TIMEOUT_TYPES = ()  # MicroPython: OSError(ETIMEDOUT)


# The errno of an OSError, or None. Raises nothing.
def errno_of(e):
    if isinstance(e, _TIMEOUT_TYPES):
        return errno.ETIMEDOUT
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    # The MicroPython TLS layer passes socket errors through mbedTLS and may flip their sign.
    return -code if code is not None and -256 < code < 0 else code


# An OSError as an OtaError with a stable reason: low_memory (ENOMEM), timeout (ETIMEDOUT), else
# io_error. Raises nothing.
def from_oserror(exc):
    code = errno_of(exc)
    if code == errno.ENOMEM:  # the numbers differ between ports (newlib's ETIMEDOUT is 116)
        return OtaError("low_memory", "ENOMEM")
    if code == errno.ETIMEDOUT:
        return OtaError("timeout", "ETIMEDOUT")
    return OtaError("io_error", str(exc))


# An exception no stage expected (a bug, or input a check missed) as an OtaError internal_error,
# after printing its traceback to the console for whoever debugs it. The caller reports it and
# carries on: one bad message or answer must not take the device off the fleet. Raises nothing.
def unexpected(exc):
    try:
        import sys

        sys.print_exception(exc)  # MicroPython
    except AttributeError:  # CPython
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return OtaError("internal_error", "%s: %s" % (type(exc).__name__, exc))
