"""ota.image and ota.image_verify: every header field at its bound and one past it, the streaming
verifier's answer for hashing off, empty segments and exact slot sizes (pinned after `make mutate`,
issue 15). CPython, images from host_tests/fakes.py."""
import hashlib
import random
import struct

import pytest

import fakes
from ota import image, image_verify
from ota.errors import OtaError


def reason(call, *args, **kw):
    with pytest.raises(OtaError) as e:
        call(*args, **kw)
    return e.value.reason


def patched(blob, offset, fmt, value):
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


APP = fakes.build_image("1.2.3", payload_size=5000)
HEAD = APP[:image.HEADER_BYTES]
SEG0 = struct.unpack_from("<I", APP, 28)[0]  # segment 0's length (descriptor + filler)


# ---------------------------------------------------------------- check_header

def test_the_header_fields_returned():
    info = image.check_header(HEAD, None, 3)
    assert info["version"] == "1.2.3" and info["project_name"] == "ota-test"
    assert (info["min_rev"], info["max_rev"], info["segment_count"], info["hash_appended"]) == (3, 199, 2, True)
    assert (info["secure_version"], info["time"], info["date"], info["idf_ver"]) == (0, "12:00:00", "Jan  1 2026", "v5.2.2")
    info = image.check_header(patched(HEAD, 23, "<B", 0), None)
    assert info["hash_appended"] is False
    info = image.check_header(patched(HEAD, 0x24, "<I", 0x01020304), None)
    assert info["secure_version"] == 0x01020304  # all four bytes, little-endian


def test_hash_appended_byte_is_0_or_1():
    assert image.check_header(patched(HEAD, 23, "<B", 1), None)["hash_appended"] is True
    for value in (2, 0xFF):
        assert reason(image.check_header, patched(HEAD, 23, "<B", value), None) == "not_app_image"
    assert reason(image.check_header, patched(HEAD, 0, "<B", 0xE8), None) == "not_app_image"


def test_the_chip_id_is_all_16_bits():
    for chip in (0x0105, 0x0500, 0xFF05, 4, 6):
        assert reason(image.check_header, patched(HEAD, 12, "<H", chip), None) == "wrong_chip", chip
    assert image.CHIP_ID == 5 and image.check_header(patched(HEAD, 12, "<H", 5), None)


@pytest.mark.parametrize("low,high,chip,ok", [
    (3, 199, 3, True), (3, 199, 2, False), (3, 199, 199, True), (3, 199, 200, False),
    (0x0102, 0x0304, 0x0102, True), (0x0102, 0x0304, 0x0101, False),  # both bytes of each field
    (0x0102, 0x0304, 0x0304, True), (0x0102, 0x0304, 0x0305, False),
    (0, 0, 5000, True), (0, 0xFFFF, 65534, True), (0, 0xFFFE, 65535, False), (0, 1, 2, False),
])
def test_chip_revision_bounds(low, high, chip, ok):
    head = patched(patched(HEAD, 15, "<H", low), 17, "<H", high)
    if ok:
        info = image.check_header(head, None, chip)
        assert (info["min_rev"], info["max_rev"]) == (low, high)
    else:
        assert reason(image.check_header, head, None, chip) == "chip_revision"


def test_segment_count_bounds():
    for count in (1, 16):
        assert image.check_header(patched(HEAD, 1, "<B", count), None)["segment_count"] == count
    for count in (0, 17, 255):
        assert reason(image.check_header, patched(HEAD, 1, "<B", count), None) == "bad_segments"


def test_segment_zero_length_bounds():
    assert image.check_header(patched(HEAD, 28, "<I", 0x100), None)  # exactly the descriptor
    assert image.check_header(patched(HEAD, 28, "<I", 0xFFFFFC), None)  # the last length below 16 MB
    for length in (0xFC, 0x101, 0x102, 0x103, 0x1000000, 0x1000004, 0xFFFFFFFC):
        assert reason(image.check_header, patched(HEAD, 28, "<I", length), None) == "bad_segments", hex(length)


def test_segment_zero_against_the_slot_exactly():
    # 24 header + 8 segment header + its data + the checksum byte (+ 32 when a hash is appended)
    need = 24 + 8 + SEG0 + 1 + 32
    assert image.check_header(HEAD, need)
    assert reason(image.check_header, HEAD, need - 1) == "too_large"
    no_hash = patched(HEAD, 23, "<B", 0)
    assert image.check_header(no_hash, need - 32)
    assert reason(image.check_header, no_hash, need - 33) == "too_large"
    big = patched(HEAD, 28, "<I", 0x10000)  # all four bytes of the length count
    assert reason(image.check_header, big, 0x10000) == "too_large"
    assert image.check_header(big, 0x10000 + 65)


def test_header_length_bounds():
    assert image.check_header(HEAD + b"junk", None)["version"] == "1.2.3"
    assert reason(image.check_header, HEAD[:-1], None) == "truncated"
    assert image.parse_descriptor(HEAD[:0xD0])["version"] == "1.2.3"  # up to idf_ver
    assert reason(image.parse_descriptor, HEAD[:0xCF]) == "truncated"


def test_descriptor_magic_all_four_bytes():
    for magic in (0xABCD5433, 0xABCE5432, 0xAACD5432, 0x3BCD5432):
        assert reason(image.check_header, patched(HEAD, 0x20, "<I", magic), None) == "not_app_image"


def test_descriptor_text_fields():
    full = b"v" * 32  # no NUL: all 32 bytes are the version
    assert image.parse_descriptor(HEAD[:0x30] + full + HEAD[0x50:])["version"] == "v" * 32
    cut = b"1.0\0garbage".ljust(32, b"x")  # the text ends at the first NUL
    assert image.parse_descriptor(HEAD[:0x30] + cut + HEAD[0x50:])["version"] == "1.0"
    assert image.parse_descriptor(HEAD[:0x30] + bytes(32) + HEAD[0x50:])["version"] == ""
    assert reason(image.parse_descriptor, HEAD[:0x50] + b"\xc3(" + HEAD[0x52:]) == "not_app_image"


# ---------------------------------------------------------------- Verifier

def verify(blob, slot=None, hashing=True, step=None):
    v = image_verify.Verifier(slot, hashing=hashing)
    step = step or len(blob) or 1
    for pos in range(0, len(blob), step):
        v.feed(memoryview(blob)[pos:pos + step])
    return v, v.finish()


def test_checksum_of_every_chunking_against_the_bytecode_fold():
    # _xor (CPython's fold) and _xor_bytecode (the device without viper) agree on every span
    rng = random.Random(3)
    data = bytes(rng.randrange(256) for _ in range(300))
    for start, end in ((0, 0), (5, 5), (0, 1), (0, 2), (3, 300), (1, 17), (0, 300), (7, 8), (10, 9)):
        for acc in (0, 0xEF, 0x5A):
            want = acc
            for b in data[start:end]:
                want ^= b
            assert image_verify._xor(data, start, end, acc) == want, (start, end)
            assert image_verify._xor_bytecode(data, start, end, acc) == want


def test_without_hashing_the_structure_and_checksum_only():
    v, length = verify(APP, hashing=False)
    assert length == len(APP) and v.checksum_ok is True and v.hash_ok is None
    bad_hash = APP[:-1] + bytes([APP[-1] ^ 1])
    v, length = verify(bad_hash, hashing=False)  # the read-back's Verifier checks it
    assert length == len(APP) and v.hash_ok is None
    assert reason(verify, bad_hash) == "bad_image_hash"
    bad_sum = bytearray(APP)
    bad_sum[-33] ^= 1
    assert reason(verify, bytes(bad_sum), hashing=False) == "bad_checksum"


def test_witness_is_what_streamed():
    # (image length, the checksum as calculated, the appended hash as received): update.py compares
    # it with the read-back's
    v, length = verify(APP, step=100)
    assert v.witness() == (len(APP), APP[-33], APP[-32:])
    blob = fakes.build_image("1.0.0", payload_size=5000, hash_appended=False)
    v, length = verify(blob, step=7)
    end = 24 + 8 + SEG0 + 8 + 5000 - 5000 % 4  # where the last segment ends: the tail follows
    assert v.witness() == (len(blob), blob[-1], blob[end:])
    bad = bytearray(blob)
    bad[-1] ^= 0xFF
    v = image_verify.Verifier(None)
    v.feed(bytes(bad))
    assert v.witness() == (len(blob), blob[-1], bytes(bad[end:]))  # calculated, not the stored byte


def image_of(segments, hash_appended=True):
    header = bytearray(24)
    header[0], header[1] = 0xE9, len(segments)
    header[12:14] = struct.pack("<H", 5)
    header[23] = 1 if hash_appended else 0
    return fakes.assemble_image(bytes(header), segments, hash_appended)


@pytest.mark.parametrize("size", [0, 4, 8, 12, 16, 20, 28])
def test_padding_for_every_end_position(size):
    # the checksum byte ends a 16-byte block wherever the last segment ends
    blob = image_of([(0x3C000000, bytes(range(size)))])
    for step in (1, 5, 1000):
        v, length = verify(blob, step=step)
        assert length == len(blob) and v.image_length == len(blob) and (len(blob) - 32) % 16 == 0


def test_an_empty_segment_between_two():
    blob = image_of([(1, b"abcd"), (2, b""), (3, b"efgh")])
    v, length = verify(blob, step=3)
    assert length == len(blob) and v.checksum_ok and v.hash_ok
    assert reason(verify, image_of([(1, b"abcd"), (2, b"")])[:-40]) == "truncated"


def test_segment_length_bounds_while_streaming():
    for bad in (5, 6, 7, 0x1000000):
        blob = bytearray(image_of([(1, b"abcd"), (2, b"efgh")]))
        struct.pack_into("<I", blob, 24 + 8 + 4 + 4, bad)  # the second segment's length
        assert reason(verify, bytes(blob)) == "bad_segments"


def test_segment_count_bounds_while_streaming():
    sixteen = image_of([(i, bytes([i]) * 4) for i in range(16)])
    assert verify(sixteen, step=9)[1] == len(sixteen)
    for count in (0, 17):
        blob = patched(sixteen, 1, "<B", count)
        assert reason(verify, blob) == "bad_segments"


def test_exact_slot_sizes_while_streaming():
    blob = image_of([(1, bytes(100)), (2, bytes(200))])
    assert verify(blob, slot=len(blob))[1] == len(blob)
    assert reason(verify, blob, slot=len(blob) - 1) == "too_large"
    # a segment that is not the last: its own end (+ checksum, + hash) must fit, refused at its
    # header before its data
    v = image_verify.Verifier(24 + 8 + 100 + 1 + 32 - 1)
    with pytest.raises(OtaError) as e:
        v.feed(blob[:24 + 8])
    assert e.value.reason == "too_large" and v.position == 24 + 8
    v = image_verify.Verifier(24 + 8 + 100 + 1 + 32)  # exactly enough for it: goes on to the next
    v.feed(blob[:24 + 8 + 100 + 7])
    assert v.image_length is None
    with pytest.raises(OtaError) as e:
        v.feed(blob[24 + 8 + 100 + 7:24 + 8 + 100 + 8])
    assert e.value.reason == "too_large" and v.position == 24 + 8 + 100 + 8
    no_hash = image_of([(1, bytes(100)), (2, bytes(200))], hash_appended=False)
    assert verify(no_hash, slot=len(no_hash))[1] == len(no_hash)
    assert reason(verify, no_hash, slot=len(no_hash) - 1) == "too_large"


def test_truncated_before_and_after_the_length_is_known():
    blob = image_of([(1, bytes(100)), (2, bytes(200))])
    assert reason(verify, blob[:30]) == "truncated"
    assert reason(verify, blob[:-1]) == "truncated"
    v = image_verify.Verifier(None)
    v.feed(blob[:-1])
    assert v.image_length == len(blob) and v.position == len(blob) - 1


def test_sha_covers_header_and_segment_headers():
    # a change in the 24-byte header (outside the checked fields) or a load address: the appended hash no longer matches
    blob = image_of([(1, bytes(100)), (2, bytes(200))])
    for offset in (4, 8, 24, 24 + 8 + 100):
        bad = bytearray(blob)
        bad[offset] ^= 1
        assert reason(verify, bytes(bad), step=13) == "bad_image_hash", offset
    assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]


def test_every_descriptor_text_field_that_fills_its_bytes_stops_at_its_end():
    # esp_app_desc_t: version[32] at 0x30, project_name[32] 0x50, time[16] 0x70, date[16] 0x80,
    # idf_ver[32] 0x90, then app_elf_sha256 at 0xB0. A field with no NUL is all its bytes and not one
    # of the next field's (mutants parse_descriptor _52, _62, _72, _82 read one byte more).
    head = bytearray(HEAD)
    fields = (("version", 0x30, 32, b"a"), ("project_name", 0x50, 32, b"b"), ("time", 0x70, 16, b"c"),
              ("date", 0x80, 16, b"d"), ("idf_ver", 0x90, 32, b"e"))
    for name, at, size, fill in fields:
        head[at:at + size] = fill * size
    head[0xB0] = ord("Z")  # the ELF hash's first byte: not text of idf_ver
    info = image.parse_descriptor(bytes(head))
    assert [info[name] for name, _, _, _ in fields] == [(fill * size).decode() for _, _, size, fill in fields]


def test_a_bad_segment_length_names_where_its_header_starts():
    # the operator's detail points at the segment header in the file: 24 (image header) + 8 + 4 bytes
    # of the first segment = 0x24 (the catalogue hides numbers: mutants _next _49, _50 moved it)
    blob = bytearray(image_of([(1, b"abcd"), (2, b"efgh")]))
    struct.pack_into("<I", blob, 24 + 8 + 4 + 4, 5)
    with pytest.raises(OtaError) as e:
        verify(bytes(blob), step=7)
    assert (e.value.reason, e.value.detail) == ("bad_segments", "segment at 0x24: length 0x5 is invalid")


def test_a_wrong_appended_hash_shows_the_first_8_bytes_of_both():
    # The detail an operator compares with `otactl image inspect`: 16 hex digits of the calculated
    # SHA-256 and of the appended one (the catalogue reads any long hex as <hex>: mutants finish _45,
    # _47 showed 9 bytes of one of them)
    bad = APP[:-1] + bytes([APP[-1] ^ 1])
    with pytest.raises(OtaError) as e:
        verify(bad, step=1000)
    calculated = hashlib.sha256(APP[:-32]).hexdigest()[:16]
    assert (e.value.reason, e.value.detail) == (
        "bad_image_hash", "SHA-256 calculated %s..., appended %s..." % (calculated, bad[-32:-24].hex()))


def test_too_large_says_at_least_only_before_the_image_length_is_known():
    # A middle segment refused at its header: the image needs at least its end (more segments come);
    # the last segment's header gives the whole length: then the detail is that length. Both lines are
    # in the catalogue, so it cannot tell them apart (mutants _too_large _13, _14 swapped them).
    blob = image_of([(1, bytes(100)), (2, bytes(200))])
    need_first = 24 + 8 + 100 + 1 + 32
    with pytest.raises(OtaError) as e:
        image_verify.Verifier(need_first - 1).feed(blob[:24 + 8])
    assert e.value.detail == "image needs at least %d bytes, the slot holds %d" % (need_first, need_first - 1)
    with pytest.raises(OtaError) as e:
        verify(blob, slot=len(blob) - 1)
    assert e.value.detail == "image needs %d bytes, the slot holds %d" % (len(blob), len(blob) - 1)


def test_a_bad_hash_appended_byte_is_named_in_the_detail():
    # the value shown is byte 23's (numbers are "#" to the catalogue: mutant check_magic _26 showed
    # byte 24's)
    with pytest.raises(OtaError) as e:
        image.check_header(patched(patched(HEAD, 23, "<B", 0x42), 24, "<B", 0x11), None)
    assert (e.value.reason, e.value.detail) == ("not_app_image", "hash_appended byte is 0x42, not 0 or 1")
