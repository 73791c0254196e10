# ota.inflate under CPython: real OTAZ containers (otactl.zimage) through update.run with the fake
# HTTPS server and NOR slots of fakes.py, MicroPython's deflate.DeflateIO replaced by
# fake_deflate.py (zlib, the same one-byte pulls, EOFError and EINVAL). Pins the container's rules
# at their bounds (docs/COMPRESSED.md), the reason codes, what lands in flash, the file hash over
# each byte once across resumes, and the Range offsets a resume asks for.
import binascii
import functools
import hashlib
import struct
import sys

import pytest

import fake_deflate
import fakes
from devkit.images import build_image
from ota import inflate, update
from ota.errors import OtaError
from otactl import zimage

SLOT = 0x40000
URL = "https://fw.example/fw.otaz"
FAST = {"retry_backoff_ms": 0, "progress_bytes": 8192}
# Compressible filler (firmware-like runs), so a container is clearly smaller than its image and
# the file's offsets never coincide with the image's.
FILL = b"".join(bytes([i & 0xFF, 0x13, 0x37, i >> 3 & 0xFF]) * 3 + b"code" for i in range(512))


class Gc:
    # inflate's gc: counts collects (a full collect under pytest takes ~0.1 s: most of a test).
    def __init__(self):
        self.collects = 0

    def collect(self):
        self.collects += 1


@pytest.fixture(autouse=True)
def deflate_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "deflate", fake_deflate)


@pytest.fixture(autouse=True)
def gc_calls(monkeypatch):
    fake = Gc()
    monkeypatch.setattr(inflate, "gc", fake)
    return fake


@functools.lru_cache(maxsize=16)
def make_image(version="1.1.0", size=48000, fill=FILL):
    return build_image(version, size=size, fill=fill)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def artifact(encoding="deflate", **kw):
    fields = {"encoding": encoding, "file_sha256": None, "file_size": None, "base_sha256": None,
              "fallback": None, "fallback_encoding": None}
    fields.update(kw)
    return fields


def run(server, art, img=None, esp=None, config=None, **kw):
    esp = esp or fakes.make_device(SLOT)
    cfg = dict(FAST)
    cfg.update(config or {})
    if img is not None:
        kw.setdefault("sha256", sha(img))
        kw.setdefault("size", len(img))
    result = update.run(URL, config=cfg, https=server, esp32=esp, running="1.0.0",
                        running_project="micropython", artifact=art, **kw)
    return result, esp


def fails(server, art, img=None, **kw):
    with pytest.raises(OtaError) as e:
        run(server, art, img, **kw)
    return e.value


def index_offsets(blob):
    return [off for off, _ in zimage.parse_header(blob)["index"]]


def assert_image(esp, img):
    slot = esp.slots["ota_1"]
    assert bytes(slot.data[:len(img)]) == img
    assert esp.boot == "ota_1" and slot.set_boot_calls == 1


# ---------------------------------------------------------------- the whole path

def test_compressed_image_lands_exactly_and_reports_progress(loaders, gc_calls):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    assert len(blob) < len(img) // 2
    server = fakes.FakeServer(blob)
    seen = []
    result, esp = run(server, artifact(file_sha256=sha(blob), file_size=len(blob)), img,
                      progress=lambda done, total: seen.append((done, total)))
    assert result["result"] == "ok" and result["bytes"] == len(img)
    assert_image(esp, img)
    assert len(server.opens) == 1 and server.opens[0][1] == 0 and server.responses[0].closed
    loader = loaders[0]
    assert loader.downloaded == len(blob) and loader.used == "deflate" and loader.restarts == 0
    assert loader.src.consumed() == len(blob) and loader.src.hashed == len(blob)
    assert gc_calls.collects == 2  # after the handshake, after the first chunk: once each
    assert seen[0] == (4096, len(img))  # the first chunk (one writer buffer) reported at once
    assert seen[-1] == (len(img), len(img)) and seen[-2][0] < len(img)
    done = [d for d, _ in seen[:-1]]
    assert all(b - a >= 8192 for a, b in zip(done, done[1:]))  # rate-limited by progress_bytes
    assert len(seen) >= len(img) // 8192


def test_without_progress_or_file_fields():
    img = make_image()
    result, esp = run(fakes.FakeServer(zimage.pack_image(img)), artifact(), img)
    assert result["result"] == "ok"
    assert_image(esp, img)


def test_without_trigger_size_and_sha256_the_container_decides():
    img = make_image()
    result, esp = run(fakes.FakeServer(zimage.pack_image(img, piece_log2=12)), artifact())
    assert result["result"] == "ok" and result["bytes"] == len(img)
    assert_image(esp, img)


def test_short_reads_from_the_socket():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, max_read=7)
    result, esp = run(server, artifact(file_sha256=sha(blob)), img)
    assert result["result"] == "ok"
    assert_image(esp, img)


def test_wrong_file_sha256_names_the_hash_of_the_bytes_received():
    img = make_image()
    blob = zimage.pack_image(img)
    e = fails(fakes.FakeServer(blob), artifact(file_sha256="ab" * 32), img)
    assert e.reason == "bad_file_sha256"
    assert e.detail == "recv=%s expect=%s" % (sha(blob), "ab" * 32)


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("drop_at", [10, 87, 88, 100, 1000, 5000, 9000, -100, -3, -1])
def test_resume_hashes_each_byte_once_and_asks_for_a_piece_start(loaders, gc_calls, drop_at):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    if drop_at < 0:
        drop_at += len(blob)
    offsets = index_offsets(blob)
    server = fakes.FakeServer(blob, plans=[{"drop_after": drop_at}], max_read=500)
    result, esp = run(server, artifact(file_sha256=sha(blob), file_size=len(blob)), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert len(server.opens) == 2
    start = server.opens[1][1]
    head_size = 88 + 8 * len(offsets)
    if drop_at < head_size:
        assert start == 0  # nothing known yet: the header again
    else:
        assert start in offsets and start <= drop_at
    loader = loaders[0]
    if drop_at >= head_size:  # (a header cut short is not counted: take() counts whole headers)
        assert loader.downloaded == drop_at + len(blob) - start
    if drop_at > 5000:
        assert gc_calls.collects == 4  # two per connection that wrote
    assert loader.restarts == 0


def test_resume_at_the_last_piece_when_everything_is_written(loaders):
    # The image's bytes are all out but the stream's last bytes are not in: the resume asks for the
    # last piece (not one past it) and decodes it only to discard it.
    img = make_image(size=4096 * 12)
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, plans=[{"drop_after": len(blob) - 1}])
    result, esp = run(server, artifact(file_sha256=sha(blob)), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert server.opens[1][1] == index_offsets(blob)[-1]


def test_a_200_to_the_range_request_is_read_and_dropped_up_to_the_piece(loaders):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, plans=[{"drop_after": 9000}, {"ignore_range": True}])
    result, esp = run(server, artifact(file_sha256=sha(blob)), img, config={"max_restarts": 1})
    assert result["result"] == "ok"
    assert_image(esp, img)
    loader = loaders[0]
    assert loader.restarts == 1
    assert loader.downloaded == 9000 + len(blob)  # the whole file again, hashed once


def test_too_many_200_answers_to_a_range_request():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, plans=[{"drop_after": 9000}, {"ignore_range": True}])
    e = fails(server, artifact(), img, config={"max_restarts": 0})
    assert e.reason == "too_many_restarts"


def test_retries_run_out_without_progress():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    drop = {"drop_after": 9000}
    cut = {"drop_after": 0}  # dies before the piece's first byte: no progress
    server = fakes.FakeServer(blob, plans=[drop, cut, cut, cut, cut])
    e = fails(server, artifact(), img, config={"retries": 2})
    assert e.reason == "connection_lost"
    # the connection that brought bytes counts as the first failure (as fetch.py): then
    # retries - 1 reconnects without a new byte
    assert len(server.opens) == 3
    server = fakes.FakeServer(blob, plans=[drop, cut, cut, cut, cut])
    e = fails(server, artifact(), img, config={"retries": 3})
    assert len(server.opens) == 4


def test_retries_count_again_after_progress():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    cut = {"drop_after": 0}
    server = fakes.FakeServer(blob, plans=[{"drop_after": 5000}, cut, {"drop_after": 3000}, cut, {}])
    result, esp = run(server, artifact(), img, config={"retries": 2})
    assert result["result"] == "ok"
    assert len(server.opens) == 5


def test_first_connection_failures_are_retried_only_for_retry_first_reasons():
    img = make_image()
    blob = zimage.pack_image(img)
    server = fakes.FakeServer(blob, plans=[{"fail": OtaError("timeout", "slow")}])
    result, _ = run(server, artifact(), img)
    assert result["result"] == "ok" and len(server.opens) == 2
    server = fakes.FakeServer(blob, plans=[{"fail": OtaError("dns_failed", "no name")}])
    assert fails(server, artifact(), img).reason == "dns_failed"
    assert len(server.opens) == 1


def test_after_the_header_resumable_reasons_are_retried():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, plans=[{"drop_after": 9000}, {"fail": OtaError("dns_failed", "x")}])
    result, _ = run(server, artifact(), img)
    assert result["result"] == "ok" and len(server.opens) == 3
    server = fakes.FakeServer(blob, plans=[{"drop_after": 9000}, {"fail": OtaError("http_404", "x")}])
    assert fails(server, artifact(), img).reason == "http_404"


def test_a_socket_oserror_is_a_drop_named_by_https():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, plans=[{"drop_after": 9000, "drop": OSError(110, "ETIMEDOUT")}])
    result, _ = run(server, artifact(), img)
    assert result["result"] == "ok" and len(server.opens) == 2
    timeout = OSError(110, "ETIMEDOUT")
    server = fakes.FakeServer(blob, plans=[{"drop_after": 9000, "drop": timeout},
                                           {"drop_after": 0, "drop": timeout}])
    e = fails(server, artifact(), img, config={"retries": 1})
    assert e.reason == "timeout"


def test_out_of_memory_on_the_socket_is_never_retried():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, plans=[{"drop_after": 9000, "drop": OSError(12, "ENOMEM")}])
    e = fails(server, artifact(), img, config={"retries": 5})
    assert e.reason == "low_memory" and len(server.opens) == 1


def test_open_raising_oserror_is_never_retried():
    img = make_image()
    server = fakes.FakeServer(zimage.pack_image(img), plans=[{"fail": OSError(12, "ENOMEM")}])
    e = fails(server, artifact(), img)
    assert e.reason == "low_memory" and len(server.opens) == 1


# ---------------------------------------------------------------- the header against the trigger

def test_trigger_file_size_is_checked_against_the_server_and_the_container():
    img = make_image()
    blob = zimage.pack_image(img)
    e = fails(fakes.FakeServer(blob), artifact(file_size=len(blob) + 1), img)
    assert e.reason == "size_mismatch"
    # the server agrees with the trigger, the container does not
    e = fails(fakes.FakeServer(blob, plans=[{"total": len(blob) + 1}]), artifact(file_size=len(blob) + 1), img)
    assert e.reason == "size_mismatch" and "container" in e.detail


def test_server_total_is_checked_against_the_container():
    img = make_image()
    blob = zimage.pack_image(img)
    e = fails(fakes.FakeServer(blob, plans=[{"total": len(blob) + 5}]), artifact(), img)
    assert e.reason == "size_mismatch"


def test_trigger_size_is_the_images():
    img = make_image()
    blob = zimage.pack_image(img)
    e = fails(fakes.FakeServer(blob), artifact(), img, size=len(img) - 16)
    assert e.reason == "size_mismatch"


def test_trigger_sha256_is_the_images():
    img = make_image()
    blob = zimage.pack_image(img)
    e = fails(fakes.FakeServer(blob), artifact(), img, sha256=sha(blob))
    assert e.reason == "bad_sha256"
    # upper-case hex is the same hash
    result, _ = run(fakes.FakeServer(blob), artifact(), img, sha256=sha(img).upper())
    assert result["result"] == "ok"


def test_an_image_larger_than_the_slot_is_refused_before_writing():
    img = make_image(size=0x40000 + 16)
    blob = zimage.pack_image(img)
    esp = fakes.make_device(SLOT)
    e = fails(fakes.FakeServer(blob), artifact(), esp=esp)
    assert e.reason == "too_large"
    assert esp.slots["ota_1"].total_erases == 0


def test_an_image_exactly_the_slot_size_is_written():
    img = make_image(size=0x10000)
    blob = zimage.pack_image(img)
    esp = fakes.make_device(0x10000)
    result, esp = run(fakes.FakeServer(blob), artifact(), esp=esp)
    assert result["result"] == "ok"
    assert_image(esp, img)


def test_a_patch_container_for_a_deflate_trigger_is_refused():
    base, img = make_image("1.0.0"), make_image()
    blob = zimage.pack_patch(base, img)
    esp = fakes.make_device(SLOT)
    e = fails(fakes.FakeServer(blob), artifact(), img, esp=esp)
    assert e.reason == "bad_container"
    e = fails(fakes.FakeServer(zimage.pack_image(img)), artifact("delta", base_sha256=sha(base)), img)
    assert e.reason == "bad_container"


# ---------------------------------------------------------------- bad streams

def with_byte(blob, at, value):
    out = bytearray(blob)
    out[at] = value
    return bytes(out)


def test_a_stream_that_does_not_decode_is_bad_compressed():
    img = make_image()
    blob = zimage.pack_image(img)
    start = index_offsets(blob)[0]
    bad = with_byte(blob, start, 0xFF)  # block type 3: reserved
    esp = fakes.make_device(SLOT)
    e = fails(fakes.FakeServer(bad), artifact(), img, esp=esp)
    assert e.reason == "bad_compressed"
    assert esp.boot == "ota_0"


def test_trailing_bytes_after_the_stream_are_bad_compressed():
    img = make_image()
    blob = zimage.pack_image(img)
    info = zimage.parse_header(blob)
    grown = bytearray(blob + b"\0\0\0\0")
    struct.pack_into("<I", grown, 12, info["file_size"] + 4)
    e = fails(fakes.FakeServer(bytes(grown)), artifact(), img)
    assert e.reason == "bad_compressed" and "file" in e.detail


def test_a_stream_decoding_to_more_than_the_image_is_bad_compressed():
    img = make_image()
    longer = zimage.pack_image(img + b"\0" * 16)
    # the header of the real image, the stream of the longer one
    blob = bytearray(zimage.pack_image(img))
    head = zimage.parse_header(bytes(blob))
    assert head["count"] == zimage.parse_header(longer)["count"]
    body = longer[zimage.parse_header(longer)["index"][0][0]:]
    fixed = bytearray(blob[:head["index"][0][0]]) + body
    struct.pack_into("<I", fixed, 12, len(fixed))
    e = fails(fakes.FakeServer(bytes(fixed)), artifact(), img)
    assert e.reason == "bad_compressed" and "more than" in e.detail


def test_a_stream_decoding_to_less_than_the_image_is_bad_compressed():
    img = make_image()
    shorter = zimage.pack_image(img[:-16])
    blob = zimage.pack_image(img)
    head = zimage.parse_header(blob)
    body = shorter[zimage.parse_header(shorter)["index"][0][0]:]
    fixed = bytearray(blob[:head["index"][0][0]]) + body
    struct.pack_into("<I", fixed, 12, len(fixed))
    e = fails(fakes.FakeServer(bytes(fixed)), artifact(), img)
    assert e.reason == "bad_compressed"
    assert "%d of %d image bytes" % (len(img) - 16, len(img)) in e.detail


def test_a_file_shorter_than_its_header_says_is_truncated():
    img = make_image()
    blob = zimage.pack_image(img)
    server = fakes.FakeServer(blob[:-10], plans=[{"total": len(blob)}])
    e = fails(server, artifact(), img, config={"retries": 0})
    assert e.reason == "truncated"


def test_a_file_ending_inside_its_header_is_truncated():
    img = make_image()
    blob = zimage.pack_image(img)
    e = fails(fakes.FakeServer(blob[:50]), artifact(), img)
    assert e.reason == "truncated" and "header" in e.detail


# ---------------------------------------------------------------- direct mode (DeflateIO on the socket)

class RawResponse(fakes.FakeResponse):
    # A plain Content-Length answer whose socket DeflateIO may read itself (http_response's _stream).
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._stream = self


class RawServer(fakes.FakeServer):
    def open(self, url, start=0, **kw):
        resp = super().open(url, start=start, **kw)
        raw = RawResponse(resp.body, resp.status, resp.range_start, resp.total, resp.drop_after,
                          resp.drop, resp.max_read)
        self.responses[-1] = raw
        return raw


def test_direct_mode_decodes_from_the_socket(loaders):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = RawServer(blob)
    result, esp = run(server, artifact(), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert loaders[0].direct
    assert loaders[0].src.offset == len(zimage.parse_header(blob)["index"]) * 8 + 88  # the header only


def test_direct_mode_is_off_when_the_file_hash_is_checked(loaders):
    img = make_image()
    blob = zimage.pack_image(img)
    result, _ = run(RawServer(blob), artifact(file_sha256=sha(blob)), img)
    assert result["result"] == "ok" and not loaders[0].direct


def test_direct_mode_resumes_after_a_drop_and_a_200(loaders):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = RawServer(blob, plans=[{"drop_after": 9000}, {"ignore_range": True}])
    result, esp = run(server, artifact(), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert loaders[0].restarts == 1 and loaders[0].direct


def test_direct_mode_socket_closing_inside_the_stream_is_connection_lost():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = RawServer(blob[:9000], plans=[{"total": len(blob)}] * 9)
    e = fails(server, artifact(), img, config={"retries": 1})
    assert e.reason == "connection_lost" and "inside the stream" in e.detail


def test_direct_mode_bad_stream_is_bad_compressed():
    img = make_image()
    blob = zimage.pack_image(img)
    bad = with_byte(blob, index_offsets(blob)[0], 0xFF)
    assert fails(RawServer(bad), artifact(), img).reason == "bad_compressed"


def test_direct_mode_socket_timeout_is_retried():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = RawServer(blob, plans=[{"drop_after": 9000, "drop": OSError(110, "ETIMEDOUT")}])
    result, esp = run(server, artifact(), img)
    assert result["result"] == "ok" and len(server.opens) == 2
    assert_image(esp, img)


def test_loader_reads_the_deadline_from_the_config():
    cfg = dict(update.DEFAULTS["ota"]) if hasattr(update, "DEFAULTS") else None
    if cfg is None:
        from ota.config import DEFAULTS

        cfg = dict(DEFAULTS["ota"])
    cfg["download_deadline_s"] = 7
    loader = inflate.Loader(URL, artifact(), None, None, cfg, None, None, None, {})
    assert loader.deadline_ms == 7000
    assert loader.used == "deflate" and loader.bad == "bad_compressed" and not loader.direct
    assert len(loader.src.buf) == 1024 and len(loader.head) == 88


def test_download_deadline(monkeypatch):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    clock = [0]

    def ticks():
        clock[0] += 400
        return clock[0]

    monkeypatch.setattr(inflate, "ticks_ms", ticks)
    e = fails(fakes.FakeServer(blob), artifact(), img, config={"download_deadline_s": 1})
    assert e.reason == "download_deadline" and "1 s" in e.detail


def test_unhexlify_of_the_trigger_sha256():
    # the trigger's hex (any case) against the container's raw bytes
    img = make_image()
    blob = zimage.pack_image(img)
    assert zimage.parse_header(blob)["image_sha256"] == binascii.hexlify(hashlib.sha256(img).digest()).decode()


# ---------------------------------------------------------------- resume inside a piece
# The writer takes 4096 bytes at a time: with 8 KiB pieces a drop leaves the writer in the middle of
# a piece half the time, and the resume decodes the piece's first half again without writing it.

class Decodes(inflate.Loader):
    # Notes, for each _decode call, where it starts and what the writer already has.
    def _decode(self, decoder, pos, writer, sink):
        self.starts = getattr(self, "starts", []) + [(pos, writer.received)]
        return super()._decode(decoder, pos, writer, sink)


@pytest.fixture
def decodes(monkeypatch):
    made = []

    class Recorded(Decodes):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)

    monkeypatch.setattr(inflate, "Loader", Recorded)
    return made


MID = [1500, 3000, 5000, 6500, 8500]  # drop points of the 8 KiB-piece container below: 4 of 5 inside a piece


@pytest.mark.parametrize("drop_at", MID)
def test_resume_inside_a_piece_decodes_its_start_again(decodes, drop_at):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=13)
    server = fakes.FakeServer(blob, plans=[{"drop_after": drop_at}], max_read=300)
    result, esp = run(server, artifact(file_sha256=sha(blob)), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert len(server.opens) == 2 and server.opens[1][1] in index_offsets(blob)
    pos, received = decodes[0].starts[1]
    assert pos == received >> 13 << 13 and pos <= received


def test_some_drop_points_land_inside_a_piece(decodes):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=13)
    inside = 0
    for drop_at in MID:
        decodes.clear()
        run(fakes.FakeServer(blob, plans=[{"drop_after": drop_at}], max_read=300), artifact(), img)
        pos, received = decodes[0].starts[1]
        inside += pos < received
    assert inside >= 3  # the tests above do exercise the decode-again loop


@pytest.mark.parametrize("drop_at", MID)
def test_direct_resume_inside_a_piece_after_a_200(loaders, drop_at):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=13)
    server = RawServer(blob, plans=[{"drop_after": drop_at}, {"ignore_range": True}])
    result, esp = run(server, artifact(), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert len(server.opens) == 2 and loaders[0].restarts == 1
    start = server.opens[1][1]
    head_size = zimage.parse_header(blob)["index"][0][0]
    # Source's bytes: the header on the first connection, the bytes dropped before the piece on the second
    assert loaders[0].downloaded == head_size + start


@pytest.mark.parametrize("drop_at", MID)
def test_direct_drop_while_skipping_to_the_piece_is_retried(drop_at):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=13)
    timeout = OSError(110, "ETIMEDOUT")
    server = RawServer(blob, plans=[{"drop_after": drop_at},
                                    {"ignore_range": True, "drop_after": 100, "drop": timeout}])
    result, esp = run(server, artifact(), img)
    assert result["result"] == "ok" and len(server.opens) == 3
    assert_image(esp, img)


@pytest.mark.parametrize("drop_at", MID)
def test_direct_drop_while_decoding_again_is_retried(decodes, drop_at):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=13)
    timeout = OSError(110, "ETIMEDOUT")
    # the second connection dies a few bytes into the piece: inside the data decoded again when the
    # writer is inside the piece
    plans = [{"drop_after": drop_at}, {"drop_after": 5, "drop": timeout}, {}]
    server = RawServer(blob, plans=plans)
    result, esp = run(server, artifact(), img, config={"retries": 3})
    assert result["result"] == "ok" and len(server.opens) == 3
    assert_image(esp, img)


def test_a_direct_answer_ending_before_the_piece_is_connection_lost():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=13)

    class Short(RawServer):
        def open(self, url, start=0, **kw):
            resp = super().open(url, start=start, **kw)
            if len(self.opens) == 2:  # a 200 that ends before the piece's offset
                resp.body = resp.body[:start - 1]
            return resp

    server = Short(blob, plans=[{"drop_after": 6000}, {"ignore_range": True, "total": len(blob)}])
    result, esp = run(server, artifact(), img, config={"retries": 3})
    assert result["result"] == "ok" and len(server.opens) == 3
    server = Short(blob, plans=[{"drop_after": 6000}] + [{"ignore_range": True, "total": len(blob)}] * 3)
    e = fails(server, artifact(), img, config={"retries": 1})
    assert e.reason == "connection_lost" and "before the piece" in e.detail


class Switch(fakes.FakeServer):
    # Serves `later` from the second connection on.
    def __init__(self, content, later, **kw):
        super().__init__(content, **kw)
        self.later = later

    def open(self, url, **kw):
        resp = super().open(url, **kw)
        self.content = self.later
        return resp


def test_a_stream_ending_inside_data_already_received_is_bad_compressed(decodes):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=13)
    offsets = index_offsets(blob)
    for drop_at in MID:  # one that leaves the writer inside piece 1 or 2
        decodes.clear()
        ended = bytearray(blob)
        run(fakes.FakeServer(blob, plans=[{"drop_after": drop_at}]), artifact(), img)
        pos, received = decodes[0].starts[1]
        if pos < received:
            break
    piece = pos >> 13
    # an empty final stored block where the piece starts: the stream ends there
    ended[offsets[piece]:offsets[piece] + 5] = b"\x01\x00\x00\xff\xff"
    server = Switch(blob, bytes(ended), plans=[{"drop_after": drop_at}])
    e = fails(server, artifact(), img)
    assert e.reason == "bad_compressed" and "already received" in e.detail


# ---------------------------------------------------------------- counters and bounds

def test_deadline_is_exceeded_only_past_it(monkeypatch):
    from ota.config import DEFAULTS

    cfg = dict(DEFAULTS["ota"], download_deadline_s=2)
    now = [1000]
    monkeypatch.setattr(inflate, "ticks_ms", lambda: now[0])
    loader = inflate.Loader(URL, artifact(), None, None, cfg, None, None, None, {})
    now[0] = 3000
    loader._check_deadline()  # exactly the deadline: still in time
    now[0] = 3001
    with pytest.raises(OtaError) as e:
        loader._check_deadline()
    assert e.value.reason == "download_deadline" and "2 s" in e.value.detail


def test_heap_is_checked_every_heap_step_of_image(monkeypatch):
    calls = []
    monkeypatch.setattr(inflate, "_HEAP_EVERY", 8192)
    monkeypatch.setattr(inflate.heap, "check_stream", lambda need: calls.append(need))
    img = make_image()
    run(fakes.FakeServer(zimage.pack_image(img)), artifact(), img, config={"min_free": 12345})
    # the writer takes 4096 bytes at a time: at 8192, 16384, ..., 40960 of 48000
    assert calls == [12345] * 5


def test_a_base_position_past_the_base_is_bad_patch():
    base, img = make_image("1.0.0"), make_image()
    blob = bytearray(zimage.pack_patch(base, img))
    struct.pack_into("<I", blob, 88 + 4, 0xFFFFFFFF)  # piece 0's base position
    esp = fakes.make_device(SLOT)
    esp.slots["ota_0"].data[:len(base)] = base
    e = fails(fakes.FakeServer(bytes(blob)), artifact("delta", base_sha256=sha(base)), img, esp=esp)
    assert e.reason == "bad_patch"


@pytest.mark.parametrize("raw", [False, True])
def test_a_flash_error_while_writing_is_reported_not_retried(raw):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    esp = fakes.make_device(SLOT)
    slot = esp.slots["ota_1"]
    real = slot.program

    def program(addr, buf):
        if addr >= 8192:
            raise OSError(5, "EIO")
        real(addr, buf)

    slot.program = program
    server = (RawServer if raw else fakes.FakeServer)(blob)
    e = fails(server, artifact(), img, esp=esp, config={"retries": 3})
    assert e.reason == "io_error" and len(server.opens) == 1
    assert esp.boot == "ota_0"
