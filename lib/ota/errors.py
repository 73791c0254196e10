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


# An OSError as an OtaError with a stable reason: low_memory (ENOMEM), timeout (ETIMEDOUT), else
# io_error. Raises nothing.
def from_oserror(exc):
    code = exc.args[0] if exc.args else None
    if code == errno.ENOMEM:  # the numbers differ between ports (newlib's ETIMEDOUT is 116)
        return OtaError("low_memory", "ENOMEM")
    if code == errno.ETIMEDOUT:
        return OtaError("timeout", "ETIMEDOUT")
    return OtaError("io_error", str(exc))
