# ota.inflate's pure parts under CPython, apart from the whole-update tests of test_mutants_inflate.py
# so that a mutation run over them needs only this quick file: the OTAZ header's bounds
# (docs/COMPRESSED.md), the index rules a resume trusts, and Source, the compressed stream that
# hashes each file byte once across resumes and skips what a 200 answer sends before the piece.
import hashlib
import struct

import pytest

from ota import inflate
from ota.errors import OtaError


# ---------------------------------------------------------------- parse_header and check_index

def header(kind=0, wbits=12, piece_log2=12, image_size=4096, file_size=5000, count=None, magic=b"OTAZ"):
    if count is None:
        count = (image_size + (1 << piece_log2) - 1) >> piece_log2
    head = bytearray(88)
    head[0:4] = magic
    head[4], head[5], head[6] = kind, wbits, piece_log2
    struct.pack_into("<II", head, 8, image_size, file_size)
    head[16:48] = bytes(range(32))
    struct.pack_into("<I", head, 48, 777)
    head[52:84] = bytes(range(100, 132))
    struct.pack_into("<H", head, 84, count)
    return head


def bad_header(head, n=88):
    with pytest.raises(OtaError) as e:
        inflate.parse_header(head, n)
    assert e.value.reason == "bad_container"
    return e.value


def test_parse_header_fields():
    info = inflate.parse_header(header(kind=1, wbits=9, piece_log2=13, image_size=8193, file_size=6000), 88)
    assert info == {"kind": 1, "wbits": 9, "piece_log2": 13, "image_size": 8193, "file_size": 6000,
                    "image_sha256": bytes(range(32)), "base_size": 777,
                    "base_sha256": bytes(range(100, 132)), "count": 2, "header_size": 88 + 16}


def test_parse_header_length_and_magic():
    inflate.parse_header(header(), 88)
    bad_header(header(), 87)
    bad_header(header(magic=b"OTAY"))
    bad_header(header(magic=b"XTAZ"))


@pytest.mark.parametrize("kind,ok", [(0, True), (1, True), (2, False), (255, False)])
def test_parse_header_kind(kind, ok):
    if ok:
        assert inflate.parse_header(header(kind=kind), 88)["kind"] == kind
    else:
        bad_header(header(kind=kind))


@pytest.mark.parametrize("wbits,ok", [(7, False), (8, True), (12, True), (13, False), (15, False)])
def test_parse_header_window_bounds(wbits, ok):
    if ok:
        assert inflate.parse_header(header(wbits=wbits), 88)["wbits"] == wbits
    else:
        e = bad_header(header(wbits=wbits))
        assert "2**%d" % wbits in e.detail


@pytest.mark.parametrize("piece_log2,ok", [(11, False), (12, True), (16, True), (17, False)])
def test_parse_header_piece_bounds(piece_log2, ok):
    if ok:
        assert inflate.parse_header(header(piece_log2=piece_log2), 88)["piece_log2"] == piece_log2
    else:
        bad_header(header(piece_log2=piece_log2))


def test_parse_header_piece_count():
    assert inflate.parse_header(header(image_size=4096), 88)["count"] == 1
    assert inflate.parse_header(header(image_size=4097), 88)["count"] == 2
    assert inflate.parse_header(header(image_size=1), 88)["count"] == 1
    bad_header(header(image_size=4096, count=2))
    bad_header(header(image_size=4097, count=1))
    bad_header(header(image_size=4097, count=3))
    bad_header(header(image_size=0, count=0))


def test_parse_header_size_bound():
    # (1024 - 88) / 8 = 117 pieces: the largest header accepted
    info = inflate.parse_header(header(image_size=117 * 4096), 88)
    assert info["count"] == 117 and info["header_size"] == 1024
    inflate.parse_header(header(image_size=116 * 4096 + 1), 88)
    bad_header(header(image_size=117 * 4096 + 1))


def with_index(head, offsets, file_size):
    head = bytearray(head)
    struct.pack_into("<I", head, 12, file_size)
    for off in offsets:
        head += struct.pack("<II", off, 0)
    return head


def check(offsets, file_size=9000):
    head = with_index(header(image_size=4096 * len(offsets), file_size=file_size), offsets, file_size)
    info = inflate.parse_header(head, 88)
    inflate.check_index(info, head)


def bad_index(offsets, file_size=9000, entry=None):
    with pytest.raises(OtaError) as e:
        check(offsets, file_size)
    assert e.value.reason == "bad_container"
    if entry is not None:
        assert e.value.detail.startswith("index entry %d:" % entry)


def test_check_index_bounds():
    h = 88 + 8 * 3
    check([h, h + 10, h + 20])
    check([h, h, h])  # empty pieces: offsets may repeat
    check([h, h + 1, 8999])  # the last byte of the file
    bad_index([h + 1, h + 10, h + 20], entry=0)  # the first piece starts right after the header
    bad_index([h - 1, h + 10, h + 20], entry=0)
    bad_index([h, h + 10, h + 9], entry=2)  # going back
    bad_index([h, h + 10, 9000], entry=2)  # at the file's end
    bad_index([h, 9001, 9002], entry=1)


def test_piece_at():
    head = bytearray(88) + struct.pack("<IIII", 10, 20, 30, 40)
    assert inflate.piece_at(head, 0) == (10, 20)
    assert inflate.piece_at(head, 1) == (30, 40)


# ---------------------------------------------------------------- Source

class Chunks:
    # A response delivering `data` in reads of at most `step` bytes.
    def __init__(self, data, step=1 << 20):
        self.data, self.step, self.pos = data, step, 0
        self.total = len(data)

    def readinto(self, buf):
        n = min(len(buf), self.step, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def source_read(src, n):
    out = bytearray()
    one = bytearray(1)
    for _ in range(n):
        assert src.readinto(one) == 1
        out += one
    return bytes(out)


def test_source_hashes_each_byte_once_across_connections():
    data = bytes(range(256)) * 20
    src = inflate.Source(bytearray(64))
    src.file_size = len(data)
    src.attach(Chunks(data, 50), 0, 0)
    assert source_read(src, 3000) == data[:3000]
    assert src.consumed() == 3000
    # a resume from an earlier offset: the bytes before `hashed` are not hashed again
    src.attach(Chunks(data[1000:], 33), 1000, 1000)
    assert source_read(src, len(data) - 1000) == data[1000:]
    assert src.consumed() == len(data) and src.hashed == len(data)
    assert src.sha.digest() == hashlib.sha256(data).digest()


def test_source_skips_up_to_want_on_a_200():
    data = bytes(range(256)) * 20
    src = inflate.Source(bytearray(64))
    src.file_size = len(data)
    src.attach(Chunks(data, 50), 0, 0)
    source_read(src, 200)
    src.attach(Chunks(data, 50), 0, 130)  # the whole file again, from byte 130 on wanted
    assert source_read(src, 100) == data[130:230]
    assert src.consumed() == 230
    src.attach(Chunks(data), 0, 64)  # want exactly at the end of the first buffer read
    assert source_read(src, 1) == data[64:65]


def test_source_end_of_answer():
    data = b"x" * 100
    src = inflate.Source(bytearray(64))
    src.file_size = 100
    src.attach(Chunks(data), 0, 0)
    source_read(src, 100)
    with pytest.raises(OtaError) as e:
        source_read(src, 1)
    assert e.value.reason == "bad_compressed" and "past the file's 100 bytes" in e.value.detail
    src.bad = "bad_patch"
    with pytest.raises(OtaError) as e:
        source_read(src, 1)
    assert e.value.reason == "bad_patch"
    src = inflate.Source(bytearray(64))
    src.file_size = 101
    src.attach(Chunks(data), 0, 0)
    source_read(src, 100)
    with pytest.raises(OtaError) as e:
        source_read(src, 1)
    assert e.value.reason == "truncated" and "100 of 101" in e.value.detail


def test_source_take_hashes_a_header_once():
    data = bytes(range(200))
    src = inflate.Source(bytearray(64))
    src.attach(Chunks(data, 7), 0, 0)
    first = bytearray(50)
    src.take(first)
    assert bytes(first) == data[:50] and src.offset == 50 and src.hashed == 50
    src.attach(Chunks(data, 7), 0, 0)  # a drop in the header: taken again from 0
    again = bytearray(80)
    src.take(again)
    assert bytes(again) == data[:80] and src.offset == 80 and src.hashed == 80
    assert src.sha.digest() == hashlib.sha256(data[:80]).digest()
    src.attach(Chunks(data[80:90]), 80, 80)
    with pytest.raises(OtaError) as e:
        src.take(bytearray(20))
    assert e.value.reason == "truncated"


def test_source_reading_flag_marks_socket_errors():
    class Broken:
        def readinto(self, buf):
            raise OSError(104, "ECONNRESET")

    src = inflate.Source(bytearray(64))
    src.attach(Broken(), 0, 0)
    with pytest.raises(OSError):
        src.readinto(bytearray(1))
    assert src.reading
    src.reading = False
    with pytest.raises(OSError):
        src.take(bytearray(4))
    assert src.reading


def test_source_hash_with_a_resume_one_byte_before_the_hashed_end():
    data = bytes(range(256)) * 4
    for step in (64, 10):  # a whole buffer, a short read
        src = inflate.Source(bytearray(64))
        src.file_size = len(data)
        src.attach(Chunks(data, 64), 0, 0)
        source_read(src, 128)  # hashed: 128
        src.attach(Chunks(data[127:], step), 127, 127)
        source_read(src, len(data) - 127)
        assert src.sha.digest() == hashlib.sha256(data).digest(), step


def test_parse_header_sizes_are_unsigned():
    head = header(image_size=4096, file_size=0xFFFFFFF0)
    struct.pack_into("<I", head, 48, 0x80000001)
    info = inflate.parse_header(head, 88)
    assert info["file_size"] == 0xFFFFFFF0 and info["base_size"] == 0x80000001


def test_source_take_in_one_byte_reads_and_in_two_parts():
    data = bytes(range(200))
    src = inflate.Source(bytearray(64))
    src.attach(Chunks(data, 1), 0, 0)
    first = bytearray(88)
    src.take(first)
    assert bytes(first) == data[:88]
    rest = bytearray(40)  # the header's index, taken after its fixed part
    src.take(rest)
    assert bytes(rest) == data[88:128] and src.offset == 128 and src.hashed == 128
    assert src.sha.digest() == hashlib.sha256(data[:128]).digest()


def test_source_take_again_after_a_one_byte_header_drop():
    data = bytes(range(200))
    src = inflate.Source(bytearray(64))
    src.attach(Chunks(data), 0, 0)
    src.take(bytearray(1))
    src.attach(Chunks(data), 0, 0)
    again = bytearray(50)
    src.take(again)
    assert src.sha.digest() == hashlib.sha256(data[:50]).digest()
