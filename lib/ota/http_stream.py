# The socket under https.py and http_response.py: one stream interface for MicroPython and CPython
# sockets, and the names of the errors they raise. Kept apart so the HTTP code reads the same on
# both: the device runs it, the host's unit tests run it under CPython with the same logic.
#
#   stream = wrap(sock)       # readinto(buf, n), readline(limit), write(data), close()
#   reason(oserror)           # 'timeout' | 'connection_lost' | None (ENOMEM)
#   raise_io(e, "tls_failed", "handshake with host")   # OtaError, or e itself for ENOMEM
import errno
import sys

from ota.errors import OtaError, errno_of  # errno_of: https.py imports it from here

_MICROPYTHON = sys.implementation.name == "micropython"


# The MicroPython socket already has readinto(buf, n)/readline/write: it is used as it is.
def wrap(sock):
    return sock if _MICROPYTHON else _CPythonStream(sock)


# The reason code for an OSError that Response.readinto let through: "timeout" or
# "connection_lost"; None for ENOMEM (a device state to report as it is, not a network failure).
def reason(e):
    code = errno_of(e)
    if code == errno.ENOMEM:
        return None
    if code in (errno.ETIMEDOUT, errno.EAGAIN):
        return "timeout"
    return "connection_lost"


# Map an OSError to a reason: timeouts -> timeout, out of memory stays OSError, the rest -> reason.
def raise_io(e, reason, doing):
    code = errno_of(e)
    if code == errno.ENOMEM:
        raise e
    if code in (errno.ETIMEDOUT, errno.EAGAIN):
        raise OtaError("timeout", doing)
    raise OtaError(reason, "%s: %s" % (doing, message(e)))


# "-29184 MBEDTLS_ERR_SSL_INVALID_RECORD", or mbedTLS's verify text on one line.
def message(e):
    text = " ".join(str(a).strip() for a in e.args) if e.args else type(e).__name__
    return "; ".join([line.strip() for line in text.split("\n") if line.strip()])


class _CPythonStream:
    # CPython sockets lack MicroPython's readinto(buf, n)/readline/write: adapt them, so the HTTP
    # code also runs under CPython (unit tests, host tools).
    def __init__(self, sock):
        self._sock = sock
        self._file = sock.makefile("rb")

    def readinto(self, buf, n=None):
        return self._file.readinto(memoryview(buf)[:n])

    def readline(self, limit):
        return self._file.readline(limit)

    def write(self, data):
        self._sock.sendall(data)

    def close(self):
        self._file.close()
        self._sock.close()
