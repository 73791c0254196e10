# A fault-injecting TCP proxy for the network fault tests: the device connects to it as
# localhost:PORT (so the server certificate for "localhost" still verifies) and it forwards to the
# real server's TLS port, misbehaving on purpose. It never looks inside TLS: every fault is at the
# TCP level, where a flaky Wi-Fi link or a middlebox would put it.
#
#   with FaultProxy(("127.0.0.1", web.port)) as proxy:     # listens on 127.0.0.1:<free port>
#       proxy.url("firmware.bin")                            # https://localhost:PORT/firmware.bin
#       proxy.drop_after("random", times=2, size=1713728)   # the first 2 connections cut mid-stream
#       proxy.connections                                    # what each connection saw
#
# Faults (one plan per proxy; each applies to the next `times` connections, then pass-through;
# times=None: every connection):
#   drop_after(n, reset=False)   forward n bytes server -> client, then close (reset: RST via SO_LINGER
#                                0, else FIN). n="random": a seeded random offset in 1..size per connection.
#   stall(after=0, seconds=60)   forward `after` bytes, then nothing either way until the client gives
#                                up (or `seconds`): the device's read timeout must fire.
#   trickle(rate, seconds=None)  server -> client at `rate` bytes/s; after `seconds` (if given) full speed.
#   rst_handshake()              wait for the client's first bytes (the TLS ClientHello), then close with
#                                RST without ever contacting the server.
#   pass_through()               no fault.
#   sequence(fault, fault, ...)  one fault per new connection, in order, then pass-through; a fault
#                                is a dict: {"kind": "drop", "n": 5000 | "random", "size": ..,
#                                "reset": bool}, {"kind": "stall", "after": n, "seconds": s},
#                                {"kind": "trickle", "rate": r, "seconds": s|None}, {"kind": "rst"},
#                                {"kind": "pass"}.
# Only loopback: the proxy binds 127.0.0.1 and connects where it is told (tests pass 127.0.0.1).
import random
import select
import socket
import struct
import threading
import time

_BUF = 16384


class FaultProxy:
    def __init__(self, target, host="127.0.0.1", seed=1234):
        self.target = target  # (host, port) of the real server
        self.host = host
        self.rng = random.Random(seed)
        self.seed = seed
        self.connections = []  # one dict per accepted connection: fault, sent, received, end
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets = set()
        self._listener = None
        self._thread = None
        self.port = None
        self.pass_through()

    # --- the plan --------------------------------------------------------------------------------
    def _set(self, fault, times):
        with self._lock:
            self._fault, self._times, self._queue = fault, times, []

    def sequence(self, *faults):
        with self._lock:
            self._fault, self._times, self._queue = {"kind": "pass"}, None, [dict(f) for f in faults]

    def pass_through(self):
        self._set({"kind": "pass"}, None)

    def drop_after(self, n, times=1, reset=False, size=None):
        if n == "random" and not size:
            raise ValueError("drop_after('random') needs size=")
        self._set({"kind": "drop", "n": n, "reset": reset, "size": size}, times)

    def stall(self, after=0, times=1, seconds=60):
        self._set({"kind": "stall", "after": after, "seconds": seconds}, times)

    def trickle(self, rate, seconds=None, times=None):
        self._set({"kind": "trickle", "rate": rate, "seconds": seconds}, times)

    def rst_handshake(self, times=1):
        self._set({"kind": "rst"}, times)

    def _next_fault(self):
        # The fault for a new connection: the queue of sequence() first, else the current fault
        # (consuming one of its `times`; pass-through when used up).
        with self._lock:
            if self._queue:
                fault = self._queue.pop(0)
            else:
                fault = dict(self._fault)
                if self._times is not None:
                    self._times -= 1
                    if self._times <= 0:
                        self._fault, self._times = {"kind": "pass"}, None
            if fault.get("n") == "random":
                fault["n"] = self.rng.randrange(1, fault["size"])
        return fault

    def ends(self):
        # How each connection ended, in order: "dropped after N bytes", "reset after N bytes",
        # "stalled after N bytes; ...", "rst in handshake", "server closed", "client closed", ...
        return [c["end"] for c in self.connections]

    # --- life cycle ------------------------------------------------------------------------------
    def url(self, path="", host="localhost"):
        return "https://%s:%d/%s" % (host, self.port, path.lstrip("/"))

    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for s in list(self._sockets):
                _close(s)
            self._sockets.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            fault = self._next_fault()
            record = {"fault": fault, "sent": 0, "received": 0, "end": None, "seconds": None,
                      "started": time.monotonic()}
            with self._lock:
                self.connections.append(record)
                self._sockets.add(client)
            threading.Thread(target=self._serve, args=(client, fault, record), daemon=True).start()

    # --- one connection --------------------------------------------------------------------------
    def _serve(self, client, fault, record):
        upstream = None
        try:
            if fault["kind"] == "rst":
                client.settimeout(10)
                record["received"] += len(client.recv(_BUF))  # the ClientHello
                record["end"] = "rst in handshake"
                _reset(client)
                return
            upstream = socket.create_connection(self.target, timeout=10)
            with self._lock:
                self._sockets.add(upstream)
            record["end"] = self._relay(client, upstream, fault, record)
        except OSError as e:
            record["end"] = "error: %s" % e
        finally:
            record["seconds"] = round(time.monotonic() - record["started"], 2)
            with self._lock:
                self._sockets.discard(client)
                self._sockets.discard(upstream)
            _close(client)
            if upstream is not None:
                _close(upstream)

    def _relay(self, client, upstream, fault, record):
        # Returns how the connection ended. server -> client bytes are counted in record["sent"].
        kind = fault["kind"]
        started = time.monotonic()
        limit = fault["n"] if kind == "drop" else fault.get("after", 0) if kind == "stall" else None
        for s in (client, upstream):
            s.setblocking(True)
            s.settimeout(None)
        while not self._stopping.is_set():
            readable, _, _ = select.select([client, upstream], [], [], 0.2)
            for s in readable:
                if s is client:
                    data = client.recv(_BUF)
                    if not data:
                        return "client closed"
                    upstream.sendall(data)
                    record["received"] += len(data)
                    continue
                want = _BUF
                rate = fault.get("rate") if kind == "trickle" else None
                if rate and fault.get("seconds") is not None and time.monotonic() - started > fault["seconds"]:
                    rate = None  # the time cap: full speed from here on
                if rate:
                    want = max(1, rate // 20)
                if limit is not None:
                    want = max(1, min(want, limit - record["sent"]))
                data = upstream.recv(want)
                if not data:
                    return "server closed"
                if limit is not None and record["sent"] + len(data) >= limit:
                    data = data[:limit - record["sent"]]
                    client.sendall(data)
                    record["sent"] += len(data)
                    if kind == "drop":
                        if fault.get("reset"):
                            _reset(client)
                            return "reset after %d bytes" % record["sent"]
                        return "dropped after %d bytes" % record["sent"]
                    return self._hold(client, fault, record)
                client.sendall(data)
                record["sent"] += len(data)
                if rate:
                    time.sleep(len(data) / rate)
        return "proxy stopped"

    def _hold(self, client, fault, record):
        # The stall: nothing forwarded either way; returns when the client closes or time is up.
        deadline = time.monotonic() + fault.get("seconds", 60)
        while not self._stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([client], [], [], 0.2)
            if readable:
                try:
                    if not client.recv(_BUF):
                        return "stalled after %d bytes; client gave up" % record["sent"]
                except OSError:
                    return "stalled after %d bytes; client reset" % record["sent"]
        return "stalled after %d bytes; stall ended" % record["sent"]


def _reset(sock):
    # SO_LINGER {on, 0} then close: the kernel sends RST instead of FIN.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock):
    try:
        sock.close()
    except OSError:
        pass
