# ota.delta under CPython: the patch operations at their bounds (docs/COMPRESSED.md: "A"/"I"/"S",
# 24-bit sizes, seeks inside the base, adds mod 256), the base check before anything is written,
# and whole delta updates (otactl.zimage.pack_patch) through update.run with the fake deflate
# module (fake_deflate.py), including the fallback when the running image is not the base.
import functools
import hashlib
import struct
import sys

import pytest

import fake_deflate
import fakes
from devkit.images import build_image
from ota import delta, inflate, update
from ota.errors import OtaError
from otactl import zimage

SLOT = 0x40000
URL = "https://fw.example/v100-to-v110.otaz"
FALLBACK = "https://fw.example/v110.bin"
FAST = {"retry_backoff_ms": 0, "progress_bytes": 8192}
FILL = b"".join(bytes([i & 0xFF, 0x13, 0x37, i >> 3 & 0xFF]) * 3 + b"code" for i in range(512))
FILL2 = FILL[:3000] + b"a new function here" + FILL[3000:9000] + FILL[9100:]


@pytest.fixture(autouse=True)
def deflate_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "deflate", fake_deflate)
    monkeypatch.setattr(inflate.gc, "collect", lambda: None)  # ~0.1 s each under pytest; no behaviour


@functools.lru_cache(maxsize=8)
def images():
    return build_image("1.0.0", size=48000, fill=FILL), build_image("1.1.0", size=48000, fill=FILL2)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def device(base, slot=SLOT):
    esp = fakes.make_device(slot)
    esp.slots["ota_0"].data[:len(base)] = base
    return esp


# ---------------------------------------------------------------- Patch, operation by operation

class Stream:
    # DeflateIO's read contract: fills the buffer unless the data ends.
    def __init__(self, data):
        self.data, self.pos = bytes(data), 0

    def readinto(self, buf):
        n = min(len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def op(kind, n, last=0, data=b""):
    return kind + struct.pack("<I", n)[:3] + bytes([last]) + data


def slot_device(size=0x3000):
    esp = fakes.make_device(size)
    return esp, bytes(esp.slots["ota_0"].data)


def patch(esp, base_size, base=None, feed=None):
    base = bytes(esp.slots["ota_0"].data[:base_size]) if base is None else base
    return delta.Patch(base_size, hashlib.sha256(base).digest(), esp, feed or (lambda: None))


def decode(p, ops, base_pos=0, out_size=None, total=None):
    d = p.attach(Stream(ops), base_pos)
    assert d is p
    out = bytearray()
    buf = bytearray(out_size or 4096)
    while True:
        n = d.readinto(buf)
        out += buf[:n]
        if n < len(buf):
            return bytes(out)


def bad_patch(p, ops, base_pos=0, out_size=None):
    with pytest.raises(OtaError) as e:
        decode(p, ops, base_pos, out_size)
    assert e.value.reason == "bad_patch"
    return e.value


def test_insert_add_and_seek():
    esp, slot = slot_device()
    p = patch(esp, 0x2000)
    ops = (op(b"I", 3, data=b"new") + op(b"A", 4, data=b"\x00\x01\x10\xff")
           + op(b"S", 100) + op(b"A", 2, data=b"\x00\x00") + op(b"S", 50, 1) + op(b"A", 1, data=b"\x00"))
    want = (b"new" + bytes((slot[i] + d) & 0xFF for i, d in zip(range(4), b"\x00\x01\x10\xff"))
            + slot[104:106] + slot[56:57])
    assert decode(p, ops) == want
    assert p.pos == 57


def test_add_wraps_mod_256():
    esp, _ = slot_device()
    esp.slots["ota_0"].data[0:3] = b"\xf0\x01\xff"
    p = patch(esp, 0x1000)
    assert decode(p, op(b"A", 3, data=b"\x20\xff\x01")) == b"\x10\x00\x00"


def test_24_bit_sizes_use_every_byte():
    esp, slot = slot_device(0x30000)
    p = patch(esp, 0x30000)
    seek = 0x010203
    ops = op(b"S", seek) + op(b"A", 5, data=bytes(5))
    assert decode(p, ops) == slot[seek:seek + 5]
    big = 0x10001  # an insert longer than 64 KiB: the third size byte
    data = bytes(range(256)) * 256 + b"z"
    assert decode(p, op(b"I", big, data=data)) == data


def test_base_position_from_the_index():
    esp, slot = slot_device()
    p = patch(esp, 0x2000)
    assert decode(p, op(b"A", 4, data=bytes(4)), base_pos=0x1000) == slot[0x1000:0x1004]
    assert decode(p, op(b"S", 0x2000, 1) + op(b"A", 1, data=b"\0"), base_pos=0x2000) == slot[0:1]


def test_attach_bounds():
    esp, _ = slot_device()
    p = patch(esp, 0x2000)
    assert p.attach(Stream(b""), 0x2000) is p
    with pytest.raises(OtaError) as e:
        p.attach(Stream(b""), 0x2001)
    assert e.value.reason == "bad_patch"


def test_attach_resets_the_operation_in_progress():
    esp, _ = slot_device()
    p = patch(esp, 0x2000)
    d = p.attach(Stream(op(b"I", 10, data=b"0123456789")), 0)
    assert d.readinto(bytearray(4)) == 4 and p.left == 6
    d = p.attach(Stream(op(b"I", 2, data=b"ab")), 5)
    assert p.left == 0 and p.op == 0 and p.pos == 5
    buf = bytearray(10)
    assert d.readinto(buf) == 2 and buf[:2] == b"ab"


def test_seek_bounds():
    esp, slot = slot_device()
    p = patch(esp, 0x2000)
    assert decode(p, op(b"S", 0x2000)) == b""  # to the end of the base: allowed
    assert p.pos == 0x2000
    assert decode(p, op(b"S", 0x2000, 1) + op(b"A", 1, data=b"\0"), base_pos=0x2000) == slot[:1]
    e = bad_patch(p, op(b"S", 0x2001))
    assert "seek to base byte 8193 of 8192" in e.detail
    bad_patch(p, op(b"S", 0x1001), base_pos=0x1000)
    bad_patch(p, op(b"S", 1, 1))  # before the base
    bad_patch(p, op(b"S", 0x1001, 1), base_pos=0x1000)
    assert decode(p, op(b"S", 0x1000, 1), base_pos=0x1000) == b"" and p.pos == 0
    bad_patch(p, op(b"S", 0, 2))  # the sign is 0 or 1
    bad_patch(p, op(b"S", 0, 255))


def test_add_bounds():
    esp, slot = slot_device()
    p = patch(esp, 0x2000)
    assert decode(p, op(b"A", 2, data=b"\0\0"), base_pos=0x1FFE) == slot[0x1FFE:0x2000]
    e = bad_patch(p, op(b"A", 3, data=b"\0\0\0"), base_pos=0x1FFE)
    assert "add past" in e.detail
    bad_patch(p, op(b"A", 1, data=b"\0"), base_pos=0x2000)


def test_operation_header_rules():
    esp, _ = slot_device()
    p = patch(esp, 0x2000)
    bad_patch(p, op(b"I", 1, 1, b"x"))  # the fifth byte of an insert or add is 0
    bad_patch(p, op(b"A", 1, 1, b"x"))
    e = bad_patch(p, op(b"B", 1, 0, b"x"))
    assert e.detail == "operation 66"
    bad_patch(p, op(b"S", 1)[:4])  # cut inside the header
    e = bad_patch(p, op(b"I", 3, data=b"no")[:1])
    assert "header" in e.detail
    e = bad_patch(p, op(b"I", 3, data=b"no"))  # cut inside the data
    assert "inside an operation" in e.detail
    e = bad_patch(p, op(b"A", 3, data=b"\0\0"))
    assert "inside an operation" in e.detail


def test_empty_patch_and_zero_length_operations():
    esp, _ = slot_device()
    p = patch(esp, 0x2000)
    assert decode(p, b"") == b""
    assert decode(p, op(b"I", 0) + op(b"A", 0) + op(b"I", 2, data=b"ok")) == b"ok"


def test_reads_span_operations_and_split_them():
    esp, slot = slot_device()
    p = patch(esp, 0x2000)
    ops = op(b"I", 5, data=b"abcde") + op(b"A", 7, data=bytes(7)) + op(b"I", 3, data=b"xyz")
    want = b"abcde" + slot[:7] + b"xyz"
    for size in (1, 2, 3, 4, 5, 6, 7, 15, 16, 100):
        assert decode(p, ops, out_size=size) == want, size


def test_long_adds_cross_buffers_and_reach_the_slot_end():
    esp, slot = slot_device(0x3000)
    p = patch(esp, 0x3000)  # the whole slot is the base
    data = bytes((i * 7) & 0xFF for i in range(0x3000))
    got = decode(p, op(b"A", 0x3000, data=data), out_size=0x3000 + 1)
    assert got == bytes((a + b) & 0xFF for a, b in zip(slot, data))
    # an add starting less than one buffer before the slot's end
    tail = 0x3000 - 100
    got = decode(p, op(b"A", 100, data=bytes(100)), base_pos=tail, out_size=700)
    assert got == slot[tail:]


def test_read_base_at_every_offset_near_the_end():
    esp, slot = slot_device(0x1000)
    p = patch(esp, 0x1000)
    for start in (0, 1, 0x1000 - 1025, 0x1000 - 1024, 0x1000 - 1023, 0x1000 - 1):
        n = 0x1000 - start
        assert decode(p, op(b"A", n, data=bytes(n)), base_pos=start, out_size=1500) == slot[start:]


def test_wrong_base_and_base_bounds():
    esp, slot = slot_device(0x3000)
    feeds = []
    p = patch(esp, 0x3000, feed=lambda: feeds.append(1))  # exactly the slot: fine
    assert p.slot_size == 0x3000 and len(feeds) == 12  # one feed per 1 KiB read
    feeds.clear()
    patch(esp, 0x2801, feed=lambda: feeds.append(1))
    assert len(feeds) == 11
    with pytest.raises(OtaError) as e:
        delta.Patch(0x3001, hashlib.sha256(slot).digest(), esp, lambda: None)
    assert e.value.reason == "wrong_base"
    with pytest.raises(OtaError) as e:
        patch(esp, 0x1000, base=slot[:0xFFF] + b"\0")
    assert e.value.reason == "wrong_base"


def test_partition_sha256_lengths():
    esp, slot = slot_device(0x3000)
    part = esp.Partition("ota_0")
    for length in (0, 1, 1023, 1024, 1025, 0x3000):
        got = delta.partition_sha256(part, length, bytearray(1024), lambda: None)
        assert got == hashlib.sha256(slot[:length]).digest(), length


def test_add_helper():
    dst = bytearray(b"\x00\x10\xf0\xff\x05")
    delta._add(dst, 1, b"\x01\x20\x02", 3)
    assert dst == b"\x00\x11\x10\x01\x05"
    delta._add(dst, 0, b"\x09\x09", 1)
    assert dst == b"\x09\x11\x10\x01\x05"


# ---------------------------------------------------------------- whole delta updates

class Sites:
    # One FakeServer per URL.
    def __init__(self, sites):
        self.sites = sites
        self.opens = []

    reason = staticmethod(fakes.FakeServer.reason)

    def open(self, url, **kw):
        self.opens.append((url, kw.get("start", 0)))
        return self.sites[url].open(url, **kw)


def artifact(encoding="delta", **kw):
    fields = {"encoding": encoding, "file_sha256": None, "file_size": None, "base_sha256": None,
              "fallback": None, "fallback_encoding": None}
    fields.update(kw)
    return fields


def run(https, art, img, esp, config=None):
    cfg = dict(FAST)
    cfg.update(config or {})
    return update.run(URL, sha256=sha(img), size=len(img), config=cfg, https=https, esp32=esp,
                      running="1.0.0", running_project="micropython", artifact=art)


def fails(https, art, img, esp, config=None):
    with pytest.raises(OtaError) as e:
        run(https, art, img, esp, config)
    return e.value


def assert_image(esp, img):
    slot = esp.slots["ota_1"]
    assert bytes(slot.data[:len(img)]) == img
    assert esp.boot == "ota_1" and slot.set_boot_calls == 1


def test_delta_update_lands_the_new_image(loaders):
    base, img = images()
    blob = zimage.pack_patch(base, img, piece_log2=12)
    assert len(blob) < len(img) // 4
    esp = device(base)
    server = fakes.FakeServer(blob)
    result = run(server, artifact(base_sha256=sha(base), file_sha256=sha(blob)), img, esp)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert loaders[0].used == "delta" and loaders[0].bad == "bad_patch"


@pytest.mark.parametrize("drop_at", [200, 300, 500, 700, -2])
def test_delta_resume_starts_at_the_piece_and_its_base_position(drop_at):
    base, img = images()
    blob = zimage.pack_patch(base, img, piece_log2=12)
    if drop_at < 0:
        drop_at += len(blob)
    esp = device(base)
    server = fakes.FakeServer(blob, plans=[{"drop_after": drop_at}], max_read=50)
    result = run(server, artifact(base_sha256=sha(base), file_sha256=sha(blob)), img, esp)
    assert result["result"] == "ok"
    assert_image(esp, img)
    info = zimage.parse_header(blob)
    assert server.opens[1][1] in [off for off, _ in info["index"]]
    assert any(pos != i << 12 for i, (_, pos) in enumerate(info["index"]))  # seeks moved the base


def test_wrong_base_takes_the_plain_fallback(loaders):
    base, img = images()
    blob = zimage.pack_patch(base, img)
    esp = fakes.make_device(SLOT)  # the running slot holds something else
    sites = Sites({URL: fakes.FakeServer(blob), FALLBACK: fakes.FakeServer(img)})
    result = run(sites, artifact(base_sha256=sha(base), fallback=FALLBACK), img, esp)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert [u for u, _ in sites.opens] == [URL, FALLBACK]
    assert loaders[0].used == "fallback"


def test_wrong_base_takes_the_compressed_fallback(loaders):
    base, img = images()
    blob = zimage.pack_patch(base, img)
    packed = zimage.pack_image(img, piece_log2=12)
    esp = fakes.make_device(SLOT)
    sites = Sites({URL: fakes.FakeServer(blob), FALLBACK: fakes.FakeServer(packed, plans=[{"drop_after": 3000}])})
    art = artifact(base_sha256=sha(base), fallback=FALLBACK, fallback_encoding="deflate",
                   file_size=len(blob), file_sha256=sha(blob))
    result = run(sites, art, img, esp)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert [u for u, _ in sites.opens][:2] == [URL, FALLBACK] and len(sites.opens) == 3
    loader = loaders[0]
    assert loader.used == "fallback" and loader.patch is None and loader.info["kind"] == 0


def test_the_compressed_fallback_is_judged_as_a_compressed_image():
    base, img = images()
    blob = zimage.pack_patch(base, img)
    packed = bytearray(zimage.pack_image(img))
    packed[zimage.parse_header(bytes(packed))["index"][0][0]] = 0xFF  # reserved block type
    esp = fakes.make_device(SLOT)
    sites = Sites({URL: fakes.FakeServer(blob), FALLBACK: fakes.FakeServer(bytes(packed))})
    art = artifact(base_sha256=sha(base), fallback=FALLBACK, fallback_encoding="deflate")
    assert fails(sites, art, img, esp).reason == "bad_compressed"


def test_wrong_base_without_fallback():
    base, img = images()
    esp = fakes.make_device(SLOT)
    e = fails(fakes.FakeServer(zimage.pack_patch(base, img)), artifact(base_sha256=sha(base)), img, esp)
    assert e.reason == "wrong_base"
    assert esp.slots["ota_1"].total_erases == 0 and esp.boot == "ota_0"


def test_trigger_base_must_be_the_patchs():
    base, img = images()
    esp = device(base)
    e = fails(fakes.FakeServer(zimage.pack_patch(base, img)), artifact(base_sha256=sha(img)), img, esp)
    assert e.reason == "bad_container"
    # no base_sha256 in the artifact: the container's is checked against the slot
    result = run(fakes.FakeServer(zimage.pack_patch(base, img)), artifact(), img, esp)
    assert result["result"] == "ok"


def test_a_corrupt_patch_stream_is_bad_patch():
    base, img = images()
    blob = bytearray(zimage.pack_patch(base, img))
    blob[zimage.parse_header(bytes(blob))["index"][0][0]] = 0xFF
    esp = device(base)
    e = fails(fakes.FakeServer(bytes(blob)), artifact(base_sha256=sha(base)), img, esp)
    assert e.reason == "bad_patch"
    assert esp.boot == "ota_0"


def test_a_patch_with_trailing_bytes_is_bad_patch():
    base, img = images()
    blob = bytearray(zimage.pack_patch(base, img) + b"\0\0")
    struct.pack_into("<I", blob, 12, len(blob))
    esp = device(base)
    e = fails(fakes.FakeServer(bytes(blob)), artifact(base_sha256=sha(base)), img, esp)
    assert e.reason == "bad_patch"
