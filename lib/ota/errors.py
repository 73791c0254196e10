# One small error type for bad data, carrying a stable reason code (README "Reason codes").
# I/O problems stay OSError; a stage that turns an OSError into a reason code says so.


class OtaError(Exception):
    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        return self.reason + ": " + self.detail if self.detail else self.reason
