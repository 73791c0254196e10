# A hostile HTTPS server for the adversarial suite (host_tests/faults/test_faults_hostile.py): a valid TLS
# certificate (the lab's), then an answer generated from a seeded random stream at every connection,
# so every hop of a download (the first answer, each redirect, each resume) gets its own hostile
# status line, headers, Location, framing, trailers or body. It never serves a whole valid image.
#
#   with HostileServer(certfile, keyfile, image, seed=1) as srv:
#       srv.url("fw.bin")         # https://localhost:PORT/fw.bin
#       srv.answers               # [(kind, first 80 bytes of the answer)], one per connection
#
# Only loopback: it binds 127.0.0.1, and a Location it makes points back at itself.
import random
import socket
import ssl
import threading

_JUNK = (b"\xff", b"\xfe\xfd", b"\x00", b"\r", b"\n", b" ", b":", b"\t", b"\x7f", b"\xc3(", b"\xe2\x82",
         b"%", b"..", b"/", b"?", b"#", b"@", b"[", b"]", b"\\", b"\"", b";", b",", b"-", b"9" * 30)
_NAMES = (b"Content-Length", b"Content-Range", b"Transfer-Encoding", b"Location", b"X-Other",
          b"content-length", b"CONTENT-RANGE", b"Connection")
KINDS = ("status", "headers", "redirect", "chunked", "range", "length", "body", "cut")


class HostileServer:
    def __init__(self, certfile, keyfile, image, seed=1):
        self.image = image
        self.rng = random.Random(seed)
        self.answers = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = None

    def url(self, path=""):
        return "https://localhost:%d/%s" % (self.port, path.lstrip("/"))

    def _junk(self, n):
        rng = self.rng
        return b"".join(rng.choice(_JUNK) if rng.random() < 0.5 else bytes([rng.randrange(256)])
                        for _ in range(n))

    def _text(self, rng):
        # A header value: plausible, junk, or both.
        return rng.choice([b"", b"0", b"-1", b"100", b"bytes 0-99/100", b"bytes */100", b"chunked",
                           b"gzip", b"https://localhost:%d/x" % self.port, b"/hop"]) + self._junk(rng.randrange(0, 6))

    def answer(self, start):
        # -> (kind, bytes): one hostile answer to a request for byte `start` on.
        rng = self.rng
        kind = rng.choice(KINDS)
        image = self.image
        head = b"HTTP/1.1 200 OK\r\n"
        lines = []
        body = image[:rng.randrange(0, 9000)]
        if kind == "status":
            head = rng.choice([b"HTTP/1.1 ", b"HTTP/9 200 OK", b"ICY 200 OK", b"HTTP/1.1 2x0 OK",
                               b"HTTP/1.1 " + self._junk(4), b""]) + self._junk(rng.randrange(0, 8)) + b"\r\n"
        elif kind == "headers":
            for _ in range(rng.randrange(1, 6)):
                name = rng.choice(_NAMES) if rng.random() < 0.5 else self._junk(rng.randrange(1, 8))
                lines.append(name + rng.choice([b": ", b":", b" : ", b""]) + self._text(rng))
        elif kind == "redirect":
            head = b"HTTP/1.1 %d Moved\r\n" % rng.choice([301, 302, 303, 307, 308])
            location = rng.choice([b"/hop-%d" % rng.randrange(1000), b"https://localhost:%d/hop" % self.port,
                                   b"//localhost:%d/h" % self.port, b"?q", b"", b"http://localhost/x",
                                   b"https://localhost:%d/" % self.port + self._junk(6)])
            lines.append(b"Location: " + location + self._junk(rng.randrange(0, 3)))
            body = b""
        elif kind == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            piece = image[:rng.randrange(1, 5000)]
            body = rng.choice([b"%x" % len(piece), self._junk(3)]) + b"\r\n" + piece + b"\r\n"
            body += rng.choice([b"0\r\n", self._junk(4) + b"\r\n", b""]) + self._junk(rng.randrange(0, 12)) + b"\r\n\r\n"
        elif kind == "range":
            head = b"HTTP/1.1 206 Partial Content\r\n"
            lines.append(b"Content-Range: " + rng.choice([b"bytes %d-%d/%d" % (start, start + 99, len(image)),
                                                          b"bytes 0-1/2", b"bytes", b""]) + self._junk(rng.randrange(0, 4)))
        elif kind == "length":
            lines.append(b"Content-Length: " + rng.choice([b"%d" % len(image), b"%d" % (len(image) * 9),
                                                           b"", b"1e9"]) + self._junk(rng.randrange(0, 3)))
        elif kind == "body":
            lines.append(b"Content-Length: %d" % len(image))
            body = self._junk(rng.randrange(1, 400)) + image[:rng.randrange(0, 9000)]
        else:  # cut: the answer ends part-way
            return kind, (head + b"Content-Length: %d\r\n\r\n" % len(image) + body)[:rng.randrange(0, 200)]
        return kind, head + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body

    def _serve(self, conn):
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                request = tls.recv(4096)
                start = 0
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"range: bytes="):
                        digits = line[13:].split(b"-")[0]
                        start = int(digits) if digits.isdigit() else 0
                with self.lock:
                    kind, data = self.answer(start)
                    self.answers.append((kind, data[:80]))
                tls.sendall(data)
        except (OSError, ssl.SSLError, ValueError):
            pass  # the device hanging up on a hostile answer is the point

    def _loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def __enter__(self):
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.listener.close()
