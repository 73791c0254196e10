# The chip's TLS as the simulated `ssl` (ssl.py) gives it to the device code: SSLContext.wrap_socket
# is the port's, with what the ESP32-C3 adds (docs/CHIP.md):
#
# - the clock: mbedTLS checks the certificates' validity against the RTC, which starts at 2000-01-01
#   (time.py). Until ntptime.settime() succeeded, a CERT_REQUIRED handshake fails as mbedTLS's
#   MBEDTLS_X509_BADCERT_FUTURE does through MicroPython (extmod/modtls_mbedtls.c): ValueError with
#   the verify info "\nThe certificate validity starts in the future\n".
#
# and, when sim.json says "tls_accounting": true, the ESP-IDF heap that every mbedTLS session takes
# on the C3 (docs/CHIP.md; MicroPython's esp32 build: CONFIG_MBEDTLS_ASYMMETRIC_CONTENT_LEN, fixed
# record buffers IN 16384 / OUT 4096 bytes, no dynamic buffers):
#
# - each open verified session holds SESSION_BYTES (about 42 KB) of the region with the largest free
#   block of sim.json "idf_heap" (default esp32._DEFAULT_IDF_HEAP), carved out of that block, and
#   esp32.idf_heap_info reports it gone (simdev.idf_taken);
# - mbedtls_ssl_setup needs one block of IN_BUFFER_BYTES (the 16 KB record plus overhead, about
#   16.7 KB). Without it: MBEDTLS_ERR_SSL_ALLOC_FAILED, which MicroPython (v1.25+, extmod/
#   modtls_mbedtls.c) answers with one gc.collect() and a second try, then OSError(ENOMEM);
# - with the block but less than SESSION_BYTES in all, the handshake runs out half-way: a bignum
#   allocation fails (MBEDTLS_ERR_MPI_ALLOC_FAILED, -0x0010), which mbedtls_raise_error turns into
#   OSError(16), not ENOMEM. With "idf_heap": [[245760, 90000, 60000, 60000]] exactly one session
#   fits, so two at once (MQTT over TLS plus the download) is the classic C3 failure, reproducible;
# - every open/close prints one console line "sim-ssl: <event> open=N peak=N opened=N ..." with the
#   verify mode and server_hostname of each new session (host_tests/e2e/test_transport.py reads them:
#   never two sessions at once, never an unverified one).
# The Unix port's TLS uses malloc, so nothing real is limited: this is a model.
import simdev
import ssl

SESSION_BYTES = 43008
IN_BUFFER_BYTES = 16717  # MBEDTLS_SSL_IN_BUFFER_LEN: 16384 + header, IV, MAC and padding overhead
_ENOMEM = 12
_MPI_ALLOC_FAILED = 16  # -MBEDTLS_ERR_MPI_ALLOC_FAILED, as mbedtls_raise_error raises it
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
            simdev.idf_taken -= SESSION_BYTES
            _log("close")
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _clock_is_set():
    import time
    return time.clock_is_set() if hasattr(time, "clock_is_set") else True  # CPython: the host's clock


class SSLContext(_port_context):
    # Made before the radio is on, a context's random generator is seeded from the C3's pseudo-random
    # numbers (docs/CHIP.md §12): said on the console, so that tests can hold the agent to never doing it.
    def __init__(self, *args):
        if not simdev.radio_on:
            print("sim-ssl: context made before the radio was on")
        super().__init__(*args)

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
        left = _largest_free() - simdev.idf_taken
        if left < IN_BUFFER_BYTES:  # mbedtls_ssl_setup: no room for the input record buffer
            import gc

            gc.collect()  # MicroPython v1.25+ collects once and tries again
            left = _largest_free() - simdev.idf_taken
            if left < IN_BUFFER_BYTES:
                _log("ENOMEM", " need=%d left=%d host=%s" % (IN_BUFFER_BYTES, left, server_hostname))
                raise OSError(_ENOMEM, "ENOMEM")
        if left < SESSION_BYTES:  # the handshake's later allocations (bignums, certificates) fail
            _log("OOM in handshake", " need=%d left=%d host=%s" % (SESSION_BYTES, left, server_hostname))
            raise OSError(_MPI_ALLOC_FAILED)
        wrapped = super().wrap_socket(sock, server_side=server_side,
                                      do_handshake_on_connect=do_handshake_on_connect,
                                      server_hostname=server_hostname)
        open_sessions += 1
        simdev.idf_taken += SESSION_BYTES
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
