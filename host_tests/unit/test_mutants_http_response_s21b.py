"""ota.http_response: a refusal quotes a bounded piece of what the server sent (40 bytes of a line or
value, 20 of a number), never the whole of a hostile server's 2 KiB line: the detail goes on the state
topic and into the console log. Each test sends more than the bound and checks the quote is cut at
it (the session 21 survivors that quoted one byte more, docs/MUTATION.md)."""
import io

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota.errors import OtaError
from ota.http_response import Response, read_head

LONG = "abcdefghij" * 6  # 60 letters: past every bound, and no digits (the catalogue reads those "#")


class Stream:
    def __init__(self, data):
        self.data = io.BytesIO(data)

    def readline(self, limit):
        return self.data.readline(limit)

    def readinto(self, buf, n=None):
        view = memoryview(buf)
        return self.data.readinto(view if n is None else view[:n])

    def close(self):
        pass


def refusal(raw):
    with pytest.raises(OtaError) as e:
        stream = Stream(raw)
        status, fields = read_head(stream)
        Response(stream, status, fields, 0, "https://h/x")
    assert e.value.reason == "bad_response"
    return e.value.detail


def test_a_bad_status_line_is_quoted_to_40_bytes():
    first = ("HTTP/1.1 2000 " + LONG).encode()  # a four-digit status
    assert refusal(first + b"\r\n\r\n") == "status line %r" % first[:40]


def test_a_status_that_is_not_a_number_is_quoted_to_40_bytes():
    first = ("HTTP/1.1 abc " + LONG).encode()
    assert refusal(first + b"\r\n\r\n") == "status line %r" % first[:40]


def test_a_header_line_without_a_colon_is_quoted_to_40_bytes():
    line = LONG.encode()
    assert refusal(b"HTTP/1.1 200 OK\r\n" + line + b"\r\n\r\n") == "header line %r" % line[:40]


def test_a_bad_header_name_is_quoted_to_40_bytes():
    name = ("x\x7f" + LONG).encode()
    assert refusal(b"HTTP/1.1 200 OK\r\n" + name + b": v\r\n\r\n") == "header name %r" % name[:40]


def test_a_value_that_is_not_utf8_is_quoted_to_40_bytes():
    raw = b"\xff" + LONG.encode()
    assert refusal(b"HTTP/1.1 200 OK\r\nLocation: " + raw + b"\r\n\r\n") == (
        "location is not UTF-8: %r" % raw[:40])


def test_an_unknown_transfer_encoding_is_quoted_to_40_characters():
    coding = "gzip" + LONG
    raw = ("HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n" % coding).encode()
    assert refusal(raw) == "Transfer-Encoding " + coding[:40]


def test_a_bad_content_length_is_quoted_to_20_characters():
    raw = ("HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n" % LONG).encode()
    assert refusal(raw) == "content-length: " + LONG[:20]


@pytest.mark.parametrize("value", [
    "bytes " + LONG,  # no "/": the first refusal
    "bytes " + LONG + "-" + LONG + "/ab",  # a span that is not digits: the second
    "bytes 0-1/" + LONG,  # a total that is neither digits nor "*": the third
])
def test_a_bad_content_range_is_quoted_to_40_characters(value):
    raw = ("HTTP/1.1 206 Partial Content\r\nContent-Range: %s\r\n\r\n" % value).encode()
    assert refusal(raw) == "Content-Range " + value[:40]
