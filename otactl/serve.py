"""`otactl serve DIR`: an HTTPS file server for firmware, for real use (a lab, a small fleet).

What a device needs from a firmware server and nothing else: GET and HEAD of the regular files under
one folder (no listing, nothing outside it, no dot files), `Range: bytes=N-` / `bytes=N-M` answered
206 with its Content-Range (the device resumes a dropped download that way, README "How an update
runs"), 416 past the end, TLS with the operator's certificate and key (or otactl's development CA,
otactl/devca.py). Files are streamed 64 KiB at a time from the offset, never read whole, so a
1.7 MB image costs one buffer per connection. One thread per connection (ThreadingHTTPServer); the
TLS handshake runs in that thread, so a client that never completes it blocks nobody.

    server = FileServer(root, certfile, keyfile, host="0.0.0.0", port=8443)
    server.start(); server.url("firmware-v1.0.1.bin"); server.stop()

The dev kit's fault-injecting server (devkit/devserver.py) builds on TLSServer, FileHandler and
parse_range(): its answer without faults is this one.
"""
import http.server
import os
import ssl
import threading

_BUFFER = 65536


def parse_range(header):
    """(first, last) of a single `bytes=N-` or `bytes=N-M` range (last None: to the end), else None:
    anything else (several ranges, suffix ranges, garbage) is answered with the whole file, which
    RFC 9110 14.2 allows a server to do."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    first, last = int(first), (int(last) if last else None)
    if last is not None and last < first:
        return None
    return first, last


class TLSServer(http.server.ThreadingHTTPServer):
    """A thread per connection, TLS (when context is set) handshaken in that thread. The dev kit's
    fault-injecting server (devkit/devserver.py) is one too."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, root, context, verbose):
        self.root = os.path.realpath(root)
        self.context = context
        self.verbose = verbose
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.context is not None:
            # The handshake waits for the handler's thread: a client that stalls in it (or refuses
            # our certificate) must not hold accept() up for everyone else.
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # a device that loses its link mid-body is ordinary; it resumes with Range


class FileHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files under server.root, one range at a time (see the module's doc)."""
    protocol_version = "HTTP/1.1"
    server_version = "otactl-serve/1"
    timeout = 60  # a silent client's socket is closed after this long

    def setup(self):
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                self.rfile = self.wfile = None

    def handle(self):
        if self.rfile is not None:  # None: the TLS handshake failed
            super().handle()

    def finish(self):
        if self.wfile is not None:
            super().finish()

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _file(self):
        # The file under root this path names, or None: no '..' out of root, no dot files, no folders.
        route = self.path.split("?", 1)[0].split("#", 1)[0]
        parts = [p for p in route.split("/") if p]
        if not parts or any(p.startswith(".") for p in parts):
            return None
        path = os.path.realpath(os.path.join(self.server.root, *parts))
        if not path.startswith(self.server.root + os.sep) or not os.path.isfile(path):
            return None
        return path

    def _answer(self, body):
        self.close_connection = True
        path = self._file()
        if path is None:
            return self._empty(404)
        try:
            f = open(path, "rb")
        except OSError:
            return self._empty(404)
        with f:
            size = os.fstat(f.fileno()).st_size
            wanted = parse_range(self.headers.get("Range"))
            if wanted is not None and wanted[0] >= size:
                return self._empty(416, {"Content-Range": "bytes */%d" % size})
            start, end = 0, size - 1
            if wanted is not None:
                start, end = wanted[0], min(size - 1, size - 1 if wanted[1] is None else wanted[1])
            self.send_response(206 if wanted is not None else 200)
            if wanted is not None:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end + 1 - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self._stream(f, start, end + 1 - start)

    def _stream(self, f, start, count):
        f.seek(start)
        buf = memoryview(bytearray(_BUFFER))
        while count > 0:
            n = f.readinto(buf[:min(_BUFFER, count)])
            if not n:
                break  # the file shrank under us: the client sees a short body and resumes
            self.wfile.write(buf[:n])
            count -= n

    def _empty(self, status, headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()


def server_context(certfile, keyfile):
    """A TLS server context from a PEM certificate (chain) and key. Raises OSError or ssl.SSLError
    when they cannot be read or do not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # mbedTLS on the device speaks 1.2
    context.load_cert_chain(certfile, keyfile)
    return context


class FileServer:
    """The folder `root` over HTTPS (HTTP when no certfile: only for a test on loopback)."""

    def __init__(self, root, certfile=None, keyfile=None, host="127.0.0.1", port=0, verbose=False):
        context = server_context(certfile, keyfile) if certfile else None
        self.scheme = "https" if context else "http"
        self._httpd = TLSServer((host, port), FileHandler, str(root), context, verbose)
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = None

    def url(self, path="", host=None):
        if host is None:
            host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "") else self.host
        return "%s://%s:%d/%s" % (self.scheme, host, self.port, path.lstrip("/"))

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def wait(self):
        while self._thread.is_alive():
            self._thread.join(0.5)  # a short join, so Ctrl-C and SIGTERM get through

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
