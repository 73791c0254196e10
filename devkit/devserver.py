# Our own HTTPS file server for tests and demos: otactl serve's (otactl/serve.py: http.server +
# ssl.SSLContext, since the seed guide's ssl.wrap_socket is gone in Python 3.12; Range support) plus
# an optional bearer-token check, and the faults a download must survive on a flaky link:
#
#   with DevServer(root, certfile, keyfile) as srv:        # threaded, free port picked at start
#       srv.url("fw.bin")                                    # https://localhost:PORT/fw.bin
#       srv.faults.drop_after = 100_000                      # cut the connection after N body bytes
#       srv.requests                                         # what each request carried
#
# Faults (srv.faults, reset() between tests):
#   drop_after     int, or "random" (a random offset inside the body): close after that many bytes
#   drop_every     False: the first request that can be cut is cut, later ones are not; True: all
#   drop_reset     True: close with a TCP RST (SO_LINGER 0) instead of a plain close
#   stall          send the headers, then nothing until the client goes away (or stall_seconds)
#   trickle        bytes per second for the body
#   ignore_range   answer 200 with the whole file to a Range request
#   short_body     withhold this many bytes at the end while announcing the full Content-Length
#   chunked        Transfer-Encoding: chunked, uneven chunk sizes, a chunk extension
#   headers        {name: value} added to every file answer (str, sent as latin-1: "X-\xff" is the
#                  byte 0xff, which no UTF-8 decoder takes)
#   trailer        raw bytes of trailer lines after a chunked body's last chunk (default b"X-Trailer: yes\r\n")
# srv.redirects = {"/a": (302, "{origin}/b")}: location templates {origin} (https://localhost:PORT),
# {ip_origin} (https://127.0.0.1:PORT), {port}.
# srv.token = "t": requests whose Host is in srv.token_hosts (default localhost) need
# "Authorization: Bearer t", else 401.
import os
import random
import socket
import ssl
import struct
import threading
import time

from otactl.serve import FileHandler, FileServer, TLSServer, parse_range

_CHUNK_SIZES = (1000, 4096, 7, 16384, 333, 65536)


class Faults:
    def __init__(self):
        self.reset()

    def reset(self):
        self.drop_after = None
        self.drop_every = False
        self.drop_reset = False
        self.stall = False
        self.stall_seconds = 30
        self.trickle = None
        self.ignore_range = False
        self.short_body = 0
        self.chunked = False
        self.headers = {}
        self.trailer = b"X-Trailer: yes\r\n"

    def clean(self):
        """No fault set: the answer a real server gives."""
        fresh = Faults.__new__(Faults)
        Faults.reset(fresh)
        return vars(self) == vars(fresh)


class _Server(TLSServer):
    # otactl serve's server (the TLS handshake in the handler's thread, so a client that never
    # completes it, or rejects our certificate as the TLS tests want, blocks nobody), plus the
    # connections to end with a RST.
    def __init__(self, address, handler, dev):
        self.dev = dev
        self.to_reset = set()
        super().__init__(address, handler, dev.root, dev.context, dev.verbose)

    def shutdown_request(self, request):
        if id(request) in self.to_reset:
            self.to_reset.discard(id(request))
            self.close_request(request)
            return
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # clients hanging up mid-body is what the fault tests do; keep test output clean


class _Handler(FileHandler):
    # otactl serve's answers (FileHandler) when no fault is set; the faults, redirects and the token
    # check otherwise.
    server_version = "otactl-devserver/1"
    timeout = 30

    def log_message(self, format, *args):
        if self.server.dev.verbose:
            super().log_message(format, *args)

    def do_GET(self):
        dev = self.server.dev
        record = {
            "path": self.path,
            "host": (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        with dev.lock:
            dev.requests.append(record)
        self.close_connection = True
        route = self.path.split("?")[0]
        if route in dev.redirects:
            status, location = dev.redirects[route]
            return self._empty(status, {"Location": dev.expand(location)})
        if dev.token is not None and record["host"] in dev.token_hosts:
            if self.headers.get("Authorization") != "Bearer " + dev.token:
                return self._empty(401)
        path = os.path.realpath(os.path.join(dev.root, route.lstrip("/")))
        if not path.startswith(os.path.realpath(dev.root) + os.sep) or not os.path.isfile(path):
            return self._empty(404)
        if dev.faults.clean():  # the ordinary answer: otactl serve's, streamed from the file
            return self._answer(body=True)
        with open(path, "rb") as f:
            data = f.read()
        self._send_file(dev, data, self.headers.get("Range"))

    def _send_file(self, dev, data, range_header):
        faults = dev.faults
        size = len(data)
        start, status = 0, 200
        if range_header and not faults.ignore_range:
            first = _parse_range(range_header)
            if first is not None and first >= size:
                return self._empty(416, {"Content-Range": "bytes */%d" % size})
            if first is not None:
                start, status = first, 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        if faults.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for name, value in faults.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        if faults.stall:
            dev.stopping.wait(faults.stall_seconds)
            return
        cut = len(body) - faults.short_body if faults.short_body else None
        with dev.lock:
            drop = faults.drop_after
            if drop == "random":
                drop = dev.rng.randrange(1, max(2, len(body)))
            if drop is not None and drop < len(body) and not faults.drop_every:
                faults.drop_after = None  # once: the resumed request goes through
        if drop is not None and (cut is None or drop < cut):
            cut = drop
        if cut is not None:
            body = body[:cut]
        if faults.chunked:
            self._send_chunked(body, complete=cut is None, trailer=faults.trailer)
        else:
            self._send_paced(body, faults.trickle)
        if drop is not None and faults.drop_reset:
            # SO_LINGER 0 + close without shutdown(SHUT_WR) first: the peer gets a RST, not a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with dev.lock:
                self.server.to_reset.add(id(self.connection))

    def _send_paced(self, body, rate):
        if not rate:
            self.wfile.write(body)
            return
        step = max(1, rate // 20)
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            self.wfile.flush()
            time.sleep(step / rate)

    def _send_chunked(self, body, complete, trailer):
        i = n = 0
        while i < len(body):
            size = _CHUNK_SIZES[n % len(_CHUNK_SIZES)]
            piece = body[i : i + size]
            ext = ";name=value" if n % 3 == 1 else ""
            self.wfile.write(b"%x%s\r\n" % (len(piece), ext.encode()) + piece + b"\r\n")
            i += len(piece)
            n += 1
        if complete:
            self.wfile.write(b"0\r\n" + trailer + b"\r\n")


def _parse_range(header):
    # The first byte of a single range (what the device sends: "bytes=N-"), the end ignored; anything
    # else is served whole.
    wanted = parse_range(header)
    return None if wanted is None else wanted[0]


class DevServer(FileServer):
    # otactl serve's FileServer (start, stop, with) around a server with faults
    def __init__(self, root, certfile=None, keyfile=None, host="127.0.0.1", port=0, verbose=False):
        self.root = str(root)
        self.context = None
        if certfile:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(certfile, keyfile)
        self.scheme = "https" if certfile else "http"
        self.faults = Faults()
        self.redirects = {}
        self.token = None
        self.token_hosts = {"localhost"}
        self.requests = []
        self.lock = threading.Lock()
        self.rng = random.Random(1234)
        self.stopping = threading.Event()
        self.verbose = verbose
        self._httpd = _Server((host, port), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = None

    def url(self, path="", host="localhost"):
        return "%s://%s:%d/%s" % (self.scheme, host, self.port, path.lstrip("/"))

    def expand(self, location):
        return location.format(
            origin="%s://localhost:%d" % (self.scheme, self.port),
            ip_origin="%s://127.0.0.1:%d" % (self.scheme, self.port),
            port=self.port,
        )

    def reset(self):
        self.faults.reset()
        self.redirects = {}
        self.token = None
        with self.lock:
            self.requests.clear()

    def stop(self):
        self.stopping.set()  # a stalled answer lets go at once
        super().stop()
