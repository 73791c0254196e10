# The chip's TLS as the simulated `ssl` (ssl.py) gives it to the device code: SSLContext.wrap_socket
# is the port's, with what the ESP32-C3 adds (docs/CHIP.md):
#
# - the clock: mbedTLS checks the certificates' validity against the RTC, which starts at 2000-01-01
#   (time.py). Until ntptime.settime() succeeded, a CERT_REQUIRED handshake fails as mbedTLS's
#   MBEDTLS_X509_BADCERT_FUTURE does through MicroPython (extmod/modtls_mbedtls.c): ValueError with
#   the verify info "\nThe certificate validity starts in the future\n".
#
# and, when sim.json says "tls_accounting": true, the ESP-IDF heap that every mbedTLS session takes
# on the C3 (PLATFORM.md §5):
#
# - each open TLS session holds SESSION_BYTES (about 42 KB; ota.heap.TLS_BYTES) of the largest free
#   block of sim.json "idf_heap" (the numbers esp32.idf_heap_info reports; default 180224 bytes);
# - a handshake that finds less than SESSION_BYTES left fails with OSError(ENOMEM) before it starts,
#   as mbedtls_ssl_setup does on the chip. With "idf_heap": [[245760, 90000, 60000, 60000]] exactly
#   one session fits, so two at once (MQTT over TLS plus the download) is the classic C3 failure,
#   here reproducible;
# - every open/close prints one console line "sim-ssl: <event> open=N peak=N opened=N ..." with the
#   verify mode and server_hostname of each new session (host_tests/test_transport.py reads them:
#   never two sessions at once, never an unverified one).
# The Unix port's TLS uses malloc, so nothing real is limited: this is a model. esp32.idf_heap_info
# does not subtract the open sessions (ota.heap.check sees the static numbers; the ENOMEM here is
# what a second session meets).
import simdev
import ssl

SESSION_BYTES = 43008
_ENOMEM = 12
_DEFAULT_LARGEST = 180224  # esp32._DEFAULT_IDF_HEAP's largest free block
_port_context = ssl._port.SSLContext if hasattr(ssl, "_port") else ssl.SSLContext

open_sessions = 0
peak_sessions = 0
opened = 0


def _largest_free():
    regions = simdev.config.get("idf_heap")
    if not regions:
        return _DEFAULT_LARGEST
    return max(region[2] for region in regions)


def _log(what, extra=""):
    print("sim-ssl: %s open=%d peak=%d opened=%d%s" % (what, open_sessions, peak_sessions, opened, extra))


class _Session:
    # The port's SSL socket with the session's IDF-heap share, released once, by close(). Explicit
    # methods with fixed arguments (no *args): readinto here allocates nothing, like the C one.
    def __init__(self, sock):
        self._sock = sock
        self._open = True

    def read(self, n=None):
        return self._sock.read() if n is None else self._sock.read(n)

    def readinto(self, buf, n=None):
        return self._sock.readinto(buf) if n is None else self._sock.readinto(buf, n)

    def readline(self, limit=None):
        return self._sock.readline() if limit is None else self._sock.readline(limit)

    def write(self, buf, n=None):
        return self._sock.write(buf) if n is None else self._sock.write(buf, n)

    def setblocking(self, flag):
        return self._sock.setblocking(flag)

    def close(self):
        global open_sessions
        if self._open:
            self._open = False
            open_sessions -= 1
            _log("close")
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _clock_is_set():
    import time
    return time.clock_is_set() if hasattr(time, "clock_is_set") else True  # CPython: the host's clock


class SSLContext(_port_context):
    # Raises ValueError (certificate not yet valid) before the clock is set, OSError(ENOMEM) when the
    # IDF heap model has no room for another session.
    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, server_hostname=None):
        global open_sessions, peak_sessions, opened
        if self.verify_mode == ssl.CERT_REQUIRED and not server_side and not _clock_is_set():
            print("sim-ssl: verify failed: clock not set (2000-01-01) host=%s" % server_hostname)
            raise ValueError("\nThe certificate validity starts in the future\n")
        if not simdev.config.get("tls_accounting"):
            return super().wrap_socket(sock, server_side=server_side,
                                       do_handshake_on_connect=do_handshake_on_connect,
                                       server_hostname=server_hostname)
        left = _largest_free() - open_sessions * SESSION_BYTES
        if left < SESSION_BYTES:
            _log("ENOMEM", " need=%d left=%d host=%s" % (SESSION_BYTES, left, server_hostname))
            raise OSError(_ENOMEM, "ENOMEM")
        wrapped = super().wrap_socket(sock, server_side=server_side,
                                      do_handshake_on_connect=do_handshake_on_connect,
                                      server_hostname=server_hostname)
        open_sessions += 1
        opened += 1
        if open_sessions > peak_sessions:
            peak_sessions = open_sessions
        mode = self.verify_mode
        verify = "required" if mode == ssl.CERT_REQUIRED else "optional" if mode == ssl.CERT_OPTIONAL else "none"
        _log("open", " verify=%s host=%s" % (verify, server_hostname))
        return _Session(wrapped)


def wrap_socket(sock, server_side=False, key=None, cert=None, cert_reqs=0, cadata=None,
                server_hostname=None, do_handshake=True):
    # micropython-lib's module-level ssl.wrap_socket (cert_reqs default CERT_NONE), on our context.
    con = SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    if cert or key:
        con.load_cert_chain(cert, key)
    if cadata:
        con.load_verify_locations(cadata=cadata)
    con.verify_mode = cert_reqs
    return con.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake,
                           server_hostname=server_hostname)
