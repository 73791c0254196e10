"""ota.http_response: the bounds and framing rules the download relies on, each at its limit and one
past it (pinned after `make mutate`, issue 15). CPython over scripted streams; every assertion is a
reason code, a length or the body's bytes, never an error's wording."""
import errno
import io

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from fakes import body_of
from ota.errors import OtaError
from ota.http_response import HEADER_LINE, Response, _read_fields, read_head


class Stream:
    # What http_stream.wrap gives https.py. fail: an OSError raised by the read that would return
    # byte number `fail_at` (readinto) or by every readline once the head is read.
    def __init__(self, data=b"", fail=None, fail_at=0):
        self.data = io.BytesIO(data)
        self.fail, self.fail_at = fail, fail_at
        self.closed = 0
        self.asked = []  # the n of each readinto(buf, n) (None: the whole buffer)

    def _check(self):
        if self.fail is not None and self.data.tell() >= self.fail_at:
            raise self.fail

    def readline(self, limit):
        self._check()
        return self.data.readline(limit)

    def readinto(self, buf, n=None):
        self._check()
        self.asked.append(n)
        view = memoryview(buf)
        return self.data.readinto(view if n is None else view[:n])

    def close(self):
        self.closed += 1


def answer(raw, start=0, **kw):
    stream = Stream(raw, **kw)
    status, fields = read_head(stream)
    stream.asked = []  # the body's reads only
    return Response(stream, status, fields, start, "https://h/x")


def reason(call, *args, **kw):
    with pytest.raises(OtaError) as e:
        call(*args, **kw)
    return e.value.reason


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


# ---------------------------------------------------------------- the status line

def test_status_line_without_a_reason_phrase_is_accepted():
    # RFC 9112: the reason phrase may be empty; nginx and others send "HTTP/1.1 200 " or less
    assert read_head(Stream(b"HTTP/1.1 200\r\n\r\n")) == (200, {})
    assert read_head(Stream(b"HTTP/1.0 206\r\nContent-Range: bytes 0-0/1\r\n\r\n"))[0] == 206
    assert read_head(Stream(b"HTTP/1.1 302 Moved Permanently Now\r\nLocation: /a\r\n\r\n")) == (302, {"location": "/a"})


@pytest.mark.parametrize("raw", [b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTPS/1.1 200 OK\r\n\r\n", b"200 OK\r\n\r\n",
                                 b"\r\n\r\n", b"HTTP/1.1 OK 200\r\n\r\n"])
def test_status_line_forms_refused(raw):
    assert reason(read_head, Stream(raw)) == "bad_response"


def test_an_answer_that_ends_before_its_head_is_connection_lost():
    assert reason(read_head, Stream(b"")) == "connection_lost"  # nothing at all
    assert reason(read_head, Stream(b"HTTP/1.1 200 OK")) == "connection_lost"  # inside the status line
    assert reason(read_head, Stream(b"HTTP/1.1 200 OK\r\n")) == "connection_lost"  # no blank line
    assert reason(read_head, Stream(b"HTTP/1.1 200 OK\r\nContent-Le")) == "connection_lost"


@pytest.mark.parametrize("code,expected", [(errno.ECONNRESET, "connection_lost"), (errno.ETIMEDOUT, "timeout"),
                                           (errno.EAGAIN, "timeout")])
def test_socket_errors_while_reading_the_head(code, expected):
    for at in (0, 5, 20):  # in the status line, and in a header line
        stream = Stream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde", fail=OSError(code), fail_at=at)
        assert reason(read_head, stream) == expected


def test_enomem_while_reading_the_head_stays_oserror():
    stream = Stream(b"HTTP/1.1 200 OK\r\n\r\n", fail=OSError(errno.ENOMEM), fail_at=3)
    with pytest.raises(OSError) as e:
        read_head(stream)
    assert e.value.args[0] == errno.ENOMEM


# ---------------------------------------------------------------- the line buffer

def test_the_callers_line_buffer_is_used_when_big_enough():
    # https.open passes the chunk buffer's free part: the head must go there, not into a new 2 KiB
    for size in (HEADER_LINE, 4 * HEADER_LINE):
        line = bytearray(size)
        assert read_head(Stream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), line) == (200, {"content-length": "5"})
        assert line[:2] == b"\r\n"  # the last line read: the blank one
    # a bigger buffer does not raise the bound: 2048 bytes with the line end, not one more
    long_line = b"X: " + b"a" * (HEADER_LINE - 4) + b"\r\n"
    assert len(long_line) == HEADER_LINE + 1
    assert reason(read_head, Stream(b"HTTP/1.1 200 OK\r\n" + long_line + b"\r\n"), bytearray(4 * HEADER_LINE)) \
        == "bad_response"
    at_bound = long_line[:3] + long_line[4:]
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\n" + at_bound + b"\r\n"), bytearray(4 * HEADER_LINE)) == (200, {})


def test_a_short_line_buffer_is_replaced_not_used():
    line = bytearray(100)
    header = b"Location: /" + b"p" * 300 + b"\r\n"  # longer than the caller's buffer
    assert read_head(Stream(b"HTTP/1.1 302 Found\r\n" + header + b"\r\n"), line) == (302, {"location": "/" + "p" * 300})
    assert line == bytearray(100)  # untouched


def test_a_status_line_longer_than_the_bound():
    first = b"HTTP/1.1 200 " + b"O" * (HEADER_LINE - 15) + b"\r\n"
    assert len(first) == HEADER_LINE
    assert read_head(Stream(first + b"\r\n")) == (200, {})
    assert reason(read_head, Stream(first[:-2] + b"K\r\n\r\n")) == "bad_response"


# ---------------------------------------------------------------- header lines

def test_header_name_whitespace_and_characters():
    # blanks around the name are dropped; a name is visible ASCII (33..126), nothing else
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\n \tContent-Length\t : 5\r\n\r\n"))[1] == {"content-length": "5"}
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\nX~!#: 1\r\nContent-Length:7\r\n\r\n"))[1] == {"content-length": "7"}
    for name in (b"Content Length", b"X\x7fY", b"X\x80", b"X\x1f", b"\xffContent-Length"):
        raw = b"HTTP/1.1 200 OK\r\n" + name + b": 5\r\n\r\n"
        assert reason(read_head, Stream(raw)) == "bad_response", name


def test_a_colon_at_the_end_gives_an_empty_value():
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\nX-Empty:\r\nLocation:\r\n\r\n"))[1] == {"location": ""}


def test_names_of_the_wanted_length_and_longer():
    # "transfer-encoding" (17 bytes, the longest we use) is read; a longer name that starts with it is not
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encodings: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert read_head(Stream(raw))[1] == {"transfer-encoding": "chunked"}


def test_values_that_are_not_utf8():
    # a value we use must decode; one we do not use is never decoded
    assert reason(read_head, Stream(b"HTTP/1.1 302 Found\r\nLocation: /\xff\xfe\r\n\r\n")) == "bad_response"
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\nX-Junk: \xff\xfe\r\nContent-Length: 1\r\n\r\n"))[1] == \
        {"content-length": "1"}


def test_a_lone_cr_line_is_not_the_end_of_the_head():
    # "\r\n" and "\n" end the head; "\rX..." is a header line (and a bad name)
    assert reason(read_head, Stream(b"HTTP/1.1 200 OK\r\n\rX: 1\r\n\r\n")) == "bad_response"


def test_trailers_have_the_same_line_bound():
    trailer = b"X-T: " + b"t" * (HEADER_LINE - 7) + b"\r\n"
    assert len(trailer) == HEADER_LINE
    assert _read_fields(Stream(trailer + b"\r\n")) == {}
    assert reason(_read_fields, Stream(b"x" + trailer + b"\r\n")) == "bad_response"
    assert body_of(answer(CHUNKED + b"1\r\na\r\n0\r\n" + trailer + b"\r\n")) == b"a"


# ---------------------------------------------------------------- identity bodies

def test_a_body_that_ends_early_on_the_fast_path_is_connection_lost():
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n")
    assert reason(resp.readinto, bytearray(8)) == "connection_lost"
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + b"a" * 8)
    assert resp.readinto(bytearray(8)) == 8
    assert reason(resp.readinto, bytearray(8)) == "connection_lost"


def test_a_body_that_ends_early_on_the_slow_path_is_connection_lost():
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
    buf = bytearray(64)
    assert resp.readinto(buf) == 3 and buf[:3] == b"abc"
    assert reason(resp.readinto, buf) == "connection_lost"


def test_never_a_byte_past_content_length():
    # A server (or a proxy) that sends more than it announced: the body is what Content-Length says,
    # and the socket is never asked for more than that, whatever the buffer's size.
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcdeEXTRA-BYTES")
    buf = bytearray(64)
    assert resp.readinto(buf) == 5 and buf[:5] == b"abcde"
    assert resp._stream.asked == [5]
    assert resp.readinto(buf) == 0 and resp.readinto(buf) == 0
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789EXTRA")
    assert resp.readinto(bytearray(8)) == 8  # the fast path: the whole buffer
    buf = bytearray(8)
    assert resp.readinto(buf) == 2 and buf[:2] == b"89"  # the rest: 2, not 8
    assert resp.readinto(buf) == 0


def test_206_without_content_length_reads_exactly_its_range():
    resp = answer(b"HTTP/1.1 206 P\r\nContent-Range: bytes 3-7/10\r\n\r\ndefghEXTRA", start=3)
    buf = bytearray(64)
    assert resp.readinto(buf) == 5 and buf[:5] == b"defgh"
    assert resp.readinto(buf) == 0


def test_a_buffer_of_exactly_the_bytes_left():
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n01234567")
    buf = bytearray(8)
    assert resp.readinto(buf) == 8 and buf == b"01234567"
    assert resp._stream.asked == [None]  # the hot path: the socket fills the caller's whole buffer
    assert resp.readinto(buf) == 0
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naEXTRA")
    assert resp.readinto(buf) == 1 and buf[:1] == b"a"
    assert resp.readinto(buf) == 0 and resp.readinto(buf) == 0
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nX")
    assert (resp.length, resp.total, resp.readinto(bytearray(4))) == (0, 0, 0)


def test_a_body_until_eof_reads_whole_buffers_and_ends():
    resp = answer(b"HTTP/1.0 200 OK\r\n\r\n" + b"z" * 10)
    assert resp.length is None and resp.total is None and resp.range_start is None
    buf = bytearray(4)
    assert [resp.readinto(buf), resp.readinto(buf), resp.readinto(buf), resp.readinto(buf)] == [4, 4, 2, 0]
    assert resp.readinto(buf) == 0
    assert resp._stream.asked == [4, 4, 4, 4]  # each asks for the whole buffer; none after the end


# ---------------------------------------------------------------- Response's fields

def test_fields_of_a_200_and_a_206():
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd")
    assert (resp.status, resp.length, resp.total, resp.range_start, resp.chunked, resp.url, resp.tls_context) == \
        (200, 4, 4, None, False, "https://h/x", None)
    resp = answer(b"HTTP/1.1 206 P\r\nContent-Range: bytes 2-3/9\r\nContent-Length: 2\r\n\r\ncd", start=2)
    assert (resp.status, resp.length, resp.total, resp.range_start) == (206, 2, 9, 2)
    resp = answer(b"HTTP/1.1 206 P\r\nContent-Range: bytes 2-3/*\r\n\r\ncd", start=2)
    assert (resp.length, resp.total, body_of(resp)) == (2, None, b"cd")


def test_206_at_another_offset_is_refused():
    raw = b"HTTP/1.1 206 P\r\nContent-Range: bytes 2-3/9\r\n\r\ncd"
    assert reason(answer, raw, start=0) == "bad_response"
    assert reason(answer, raw, start=3) == "bad_response"
    assert reason(answer, b"HTTP/1.1 206 P\r\nContent-Length: 2\r\n\r\ncd", start=2) == "bad_response"


def test_206_chunked_is_framed_by_its_chunks():
    raw = b"HTTP/1.1 206 P\r\nContent-Range: bytes 2-4/9\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ncde\r\n0\r\n\r\n"
    resp = answer(raw, start=2)
    assert (resp.chunked, resp.length, resp.range_start, resp.total) == (True, None, 2, 9)
    assert body_of(resp) == b"cde"


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip", b"deflate"])
def test_transfer_codings_we_cannot_read_are_refused(coding):
    assert reason(answer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n") == "bad_response"


def test_chunked_ignores_content_length():
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
    assert (resp.length, resp.total, body_of(resp)) == (None, None, b"ab")


def test_close_and_context_manager_close_the_stream_once():
    resp = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    stream = resp._stream
    with resp as r:
        assert r is resp
    assert stream.closed == 1 and resp._stream is None
    resp.close()
    assert stream.closed == 1


# ---------------------------------------------------------------- chunked framing

def test_chunk_size_line_bound():
    # The size line is read with a limit of 80 bytes, its CRLF included: 80 is read, 81 is bad_response
    def size_line(total):
        ext = b";e=" + b"x" * (total - 6)
        line = b"1" + ext + b"\r\n"
        assert len(line) == total
        return line

    assert body_of(answer(CHUNKED + size_line(80) + b"a\r\n0\r\n\r\n")) == b"a"
    assert reason(body_of, answer(CHUNKED + size_line(81) + b"a\r\n0\r\n\r\n")) == "bad_response"
    # cut exactly at the limit, no line end: too long, not a cut
    assert reason(body_of, answer(CHUNKED + b"1" * 80)) == "bad_response"
    assert reason(body_of, answer(CHUNKED + b"1" * 79)) == "connection_lost"


def test_chunk_sizes_in_hex_with_blanks():
    assert body_of(answer(CHUNKED + b"A\r\n0123456789\r\n0\r\n\r\n")) == b"0123456789"
    assert body_of(answer(CHUNKED + b" a \r\n0123456789\r\n0\r\n\r\n")) == b"0123456789"
    assert body_of(answer(CHUNKED + b"00000002\r\nab\r\n000\r\n\r\n")) == b"ab"
    assert body_of(answer(CHUNKED + b"2 ; name=value\r\nab\r\n0;x\r\n\r\n")) == b"ab"


@pytest.mark.parametrize("size_line", [b"\r\n", b";x\r\n", b"-2\r\n", b"z\r\n", b"2z\r\n"])
def test_bad_chunk_size_lines(size_line):
    assert reason(body_of, answer(CHUNKED + size_line + b"ab\r\n0\r\n\r\n")) == "bad_response"


def test_chunk_read_never_runs_past_its_chunk():
    resp = answer(CHUNKED + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    buf = bytearray(64)
    assert resp.readinto(buf) == 3 and buf[:3] == b"abc"  # a chunk boundary ends a read
    assert resp.readinto(buf) == 4 and buf[:4] == b"defg"
    assert resp.readinto(buf) == 0
    assert [n for n in resp._stream.asked if n != 1] == [3, 4]  # (1: the trailers, byte by byte)


def test_chunk_crlf_must_follow_each_chunk():
    assert reason(body_of, answer(CHUNKED + b"2\r\nab\n\n0\r\n\r\n")) == "bad_response"
    assert reason(body_of, answer(CHUNKED + b"2\r\nabX\r\n0\r\n\r\n")) == "bad_response"
    assert reason(body_of, answer(CHUNKED + b"2\r\nab")) == "connection_lost"


def test_chunked_end_with_trailers_then_stays_ended():
    resp = answer(CHUNKED + b"1\r\nz\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\nGARBAGE")
    assert body_of(resp) == b"z"
    assert resp.readinto(bytearray(4)) == 0
    assert reason(body_of, answer(CHUNKED + b"1\r\nz\r\n0\r\nX-A: 1\r\n")) == "connection_lost"


def test_socket_errors_inside_chunk_framing_are_reason_codes():
    head = CHUNKED + b"2\r\nab\r\n"
    stream_fail = OSError(errno.ECONNRESET)
    resp = answer(head + b"2\r\ncd\r\n0\r\n\r\n", fail=stream_fail, fail_at=len(head))
    assert resp.readinto(bytearray(64)) == 2
    assert reason(resp.readinto, bytearray(64)) == "connection_lost"
    resp = answer(head + b"2\r\ncd\r\n0\r\n\r\n", fail=OSError(errno.ETIMEDOUT), fail_at=len(head))
    assert resp.readinto(bytearray(64)) == 2
    assert reason(resp.readinto, bytearray(64)) == "timeout"


# ---------------------------------------------------------------- header names, one blank or byte off

@pytest.mark.parametrize("line", [b"X\n", b"::x\r\n", b"A" * (HEADER_LINE - 1) + b"\n"])
def test_header_lines_without_a_name_and_colon(line):
    # a 2-byte line is not the end of the head unless it is "\r\n"; a colon first is no name; a line
    # as long as the buffer without a colon (nothing of an earlier line may be read past its end)
    assert reason(read_head, Stream(b"HTTP/1.1 200 OK\r\n" + line + b"\r\n")) == "bad_response"


def test_one_blank_before_or_after_a_name():
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\n Content-Length: 5\r\n\r\n"))[1] == {"content-length": "5"}
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n"))[1] == {"content-length": "5"}
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\n\tTransfer-Encoding: chunked\r\n\r\n"))[1] == \
        {"transfer-encoding": "chunked"}


def test_a_name_that_only_starts_like_a_wanted_one():
    raw = b"HTTP/1.1 302 Found\r\nLocationX: /evil\r\nLocation: /good\r\n\r\n"
    assert read_head(Stream(raw)) == (302, {"location": "/good"})
    assert read_head(Stream(b"HTTP/1.1 200 OK\r\nXContent-Length: 9\r\n\r\n"))[1] == {}


def test_junk_after_a_chunk_up_to_the_end():
    # no CRLF after the chunk but 100 more bytes and the end of the answer: bad_response (a line
    # longer than the chunk-size bound), whatever the connection does next
    assert reason(body_of, answer(CHUNKED + b"2\r\nab" + b"x" * 100)) == "bad_response"
