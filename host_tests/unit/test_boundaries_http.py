# The HTTP client's boundaries (issue 15): chunk framing, Content-Length against Content-Range, and
# redirect chains of exactly max_redirects hops and one more. CPython over a scripted stream (fast
# enough for the mutation run); the redirect bound again in the real MicroPython binary against the
# dev server is in sim/test_https_micropython.py (its driver and fixtures).
import io

import pytest

from fakes import body_of
from ota import https
from ota.errors import OtaError
from ota.http_response import Response, read_head


class Stream:
    # What http_stream.wrap gives https.py: readline(limit), readinto(buf, n), write, close.
    def __init__(self, data=b""):
        self.data = io.BytesIO(data)
        self.sent = b""
        self.closed = False

    def readline(self, limit):
        return self.data.readline(limit)

    def readinto(self, buf, n=None):
        view = memoryview(buf)
        return self.data.readinto(view if n is None else view[:n])

    def write(self, data):
        self.sent += data
        return len(data)

    def close(self):
        self.closed = True


def answer(raw, start=0):
    stream = Stream(raw)
    status, fields = read_head(stream)
    return Response(stream, status, fields, start, "https://h/x")


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunk_longer_than_its_size_line_is_bad_response():
    # The chunk carries 7 bytes where its size line says 5: the two extra bytes must not be dropped
    # as if they were the CRLF; the read that ends the chunk raises.
    resp = answer(CHUNKED + b"5\r\nabcdeXX\r\n0\r\n\r\n")
    with pytest.raises(OtaError) as e:
        resp.readinto(bytearray(64))
    assert e.value.reason == "bad_response"


def test_chunked_framing_that_is_right():
    assert body_of(answer(CHUNKED + b"5\r\nabcde\r\n0\r\n\r\n")) == b"abcde"
    assert body_of(answer(CHUNKED + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n")) == b"abcde"
    # a buffer smaller than the chunk: the chunk is read in parts
    assert body_of(answer(CHUNKED + b"a\r\n0123456789\r\n0\r\n\r\n"), size=4) == b"0123456789"
    resp = answer(CHUNKED + b"5\r\nabcde\r\n0\r\n\r\n")
    assert resp.chunked and resp.length is None
    body_of(resp)
    assert resp.readinto(bytearray(8)) == 0  # and stays at the end


@pytest.mark.parametrize("body,reason", [
    (b"5\r\nabc", "connection_lost"),  # cut inside a chunk
    (b"5\r\nabcde\r\n", "connection_lost"),  # no last chunk
    (b"5\r\nabcde", "connection_lost"),  # cut before the CRLF
    (b"g\r\n", "bad_response"),
    (b"-1\r\n", "bad_response"),
])
def test_chunked_cut_or_malformed(body, reason):
    with pytest.raises(OtaError) as e:
        body_of(answer(CHUNKED + body))
    assert e.value.reason == reason


def test_content_length_must_agree_with_content_range():
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 3-7/10\r\nContent-Length: %d\r\n\r\n"
    for wrong in (4, 6):
        with pytest.raises(OtaError) as e:
            answer(head % wrong + b"defgh", start=3)
        assert e.value.reason == "bad_response"
    resp = answer(head % 5 + b"defgh", start=3)
    assert (resp.length, resp.range_start, resp.total, body_of(resp)) == (5, 3, 10, b"defgh")
    # without Content-Length the range gives the length
    resp = answer(b"HTTP/1.1 206 P\r\nContent-Range: bytes 3-7/10\r\n\r\ndefgh", start=3)
    assert (resp.length, body_of(resp)) == (5, b"defgh")


def test_content_length_body_ends_exactly():
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcdeEXTRA")
    assert (resp.length, resp.total, body_of(resp, size=5)) == (5, 5, b"abcde")
    with pytest.raises(OtaError) as e:
        body_of(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcde"))
    assert e.value.reason == "connection_lost"


# ---------------------------------------------------------------- redirects, counted exactly

class Server:
    # Answers by path: /rN redirects to /r(N-1), /r0 is the file. Counts the open connections.
    def __init__(self):
        self.open_now = self.most_open = 0
        self.paths = []

    def connect(self, host, port, connect_timeout, read_timeout, context):
        server = self

        class Conn(Stream):
            def write(self, data):
                path = data.split(b" ")[1].decode()
                server.paths.append(path)
                hop = int(path[2:])
                if hop:
                    reply = b"HTTP/1.1 302 Found\r\nLocation: /r%d\r\n\r\n" % (hop - 1)
                else:
                    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                self.data = io.BytesIO(reply)
                return len(data)

            def close(self):
                if not self.closed:
                    server.open_now -= 1
                self.closed = True

        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        return Conn()


@pytest.fixture
def server(monkeypatch):
    s = Server()
    monkeypatch.setattr(https, "_connect", s.connect)
    monkeypatch.setattr(https, "context", lambda ca_path: "tls context")
    return s


@pytest.mark.parametrize("limit", [0, 1, 2, 5])
def test_exactly_max_redirects_hops_succeed_one_more_fails(server, limit):
    resp = https.open("https://fw.example/r%d" % limit, max_redirects=limit)
    assert resp.status == 200 and body_of(resp) == b"ok" and resp.url == "https://fw.example/r0"
    resp.close()
    assert server.most_open == 1 and server.open_now == 0
    with pytest.raises(OtaError) as e:
        https.open("https://fw.example/r%d" % (limit + 1), max_redirects=limit)
    assert e.value.reason == "too_many_redirects"
    assert server.open_now == 0


def test_default_limit_is_five_hops(server):
    resp = https.open("https://fw.example/r5")
    assert body_of(resp) == b"ok"
    with pytest.raises(OtaError) as e:
        https.open("https://fw.example/r6")
    assert e.value.reason == "too_many_redirects"
    assert server.paths[-1] == "/r1"  # the sixth hop's target was never asked for


# ---------------------------------------------------------------- header fields, one rule each

@pytest.mark.parametrize("text,expected", [
    ("bytes 3-7/10", (3, 7, 10)),
    ("bytes 3-3/10", (3, 3, 10)),  # a single byte: last == first
    ("bytes 0-0/*", (0, 0, None)),
    ("bytes 5-3/10", None),  # last before first
    ("bytes -5/10", None),
    ("bytes 3-/10", None),
    ("bytes 3-7", None),
    ("bytes 3-7/", None),
    ("bytes 3-7/1x", None),
    ("bytes 3-7-9/10", None),
    ("bytes 3-7/10/11", None),
    ("bytes x-7/10", None),
    ("bytes 3-y/10", None),
    ("items 3-7/10", None),
    ("", None),
    (None, None),
])
def test_content_range_forms(text, expected):
    from ota.http_response import _content_range

    if expected is None:
        with pytest.raises(OtaError) as e:
            _content_range(text)
        assert e.value.reason == "bad_response"
    else:
        assert _content_range(text) == expected


@pytest.mark.parametrize("value,expected", [
    ("0", 0), ("123456789012", 123456789012), ("1234567890123", None), ("", None), ("+5", None),
    ("5x", None), ("0x10", None),
])
def test_content_length_forms(value, expected):
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n" % value.encode()
    if expected is None:
        with pytest.raises(OtaError) as e:
            answer(raw)
        assert e.value.reason == "bad_response"
    else:
        assert answer(raw).length == expected


def test_header_fields():
    resp = answer(b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH : 2\r\ncontent-length: 2\r\nX-Other: a:b\r\n\r\nok")
    assert resp.length == 2 and body_of(resp) == b"ok"  # names in any case, a repeat that agrees
    stream = Stream(b"HTTP/1.1 302 Found\r\nLocation: /Path/To?X=Y\r\n\r\n")
    assert read_head(stream) == (302, {"location": "/Path/To?X=Y"})  # Location keeps its case
    stream = Stream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")
    assert read_head(stream)[1] == {"transfer-encoding": "chunked"}
    assert read_head(Stream(b"HTTP/1.0 404 Not Found\n\n")) == (404, {})  # bare LF lines


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: value\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1\r\n\r\n",
])
def test_bad_heads_are_bad_response(raw):
    with pytest.raises(OtaError) as e:
        read_head(Stream(raw))
    assert e.value.reason == "bad_response"


def test_header_line_count_bound():
    # 64 header lines are read (_MAX_HEADERS); the 65th is one too many
    head = b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 63
    assert read_head(Stream(head + b"Content-Length: 0\r\n\r\n"))[1] == {"content-length": "0"}
    with pytest.raises(OtaError) as e:
        read_head(Stream(head + b"X-A: b\r\nContent-Length: 0\r\n\r\n"))
    assert e.value.reason == "bad_response"


def test_header_line_length_bound():
    line = b"X: " + b"a" * (2048 - 5) + b"\r\n"  # exactly 2048 bytes with its CRLF
    assert len(line) == 2048
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\n" + line + b"\r\n")) == (200, {})
    with pytest.raises(OtaError) as e:
        read_head(Stream(b"HTTP/1.1 200 OK\r\nX: a" + line + b"\r\n"))
    assert e.value.reason == "bad_response"


def test_body_until_eof_and_identity():
    resp = answer(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello world")
    assert (resp.length, resp.chunked, body_of(resp, size=4)) == (None, False, b"hello world")
    assert resp.readinto(bytearray(4)) == 0
    resp.close()
    resp.close()  # twice is fine
