"""The one error type of the host tools: a stable reason code and a message for a person."""


class OtaError(Exception):
    def __init__(self, reason, message):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason
        self.message = message
