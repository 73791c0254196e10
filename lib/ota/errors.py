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
