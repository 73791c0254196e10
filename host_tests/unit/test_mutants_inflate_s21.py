# ota.inflate, session 21: the two resume cases the first inflate tests left open (docs/MUTATION.md,
# "Compressed and delta path": `_decode__mutmut_5`, `_10`, `Source.take__mutmut_14`).
#
# 1. A resume that lands inside a piece by an amount that is not a multiple of the writer's buffer.
#    With the default ota.chunk_size (4096) and pieces of 4 KiB or more, what the writer already has of
#    a piece is always whole buffers, so "decode again into the whole free space" lands exactly. An
#    ota.chunk_size of 12288 (allowed: a multiple of 4096, config.py) with 16 KiB pieces leaves 8 KiB
#    or 4 KiB of a piece: the decode-again loop must stop exactly there or the image is shifted.
# 2. A flash error while delta.Patch hashes the running slot (right after the header was read from
#    the socket) is the flash's: io_error at once, never retried as a dropped connection.
import sys

import pytest

import fake_deflate
import fakes
from devkit.images import build_image
from ota import inflate, update
from ota.errors import OtaError
from otactl import zimage
from test_mutants_inflate import artifact, sha

SLOT = 0x40000
URL = "https://fw.example/fw.otaz"
FILL = b"".join(bytes([i & 0xFF, 0x13, 0x37, i >> 3 & 0xFF]) * 3 + b"code" for i in range(512))
IMAGE = build_image("1.1.0", size=48000, fill=FILL)
BASE = build_image("1.0.0", size=48000, fill=FILL)


@pytest.fixture(autouse=True)
def deflate_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "deflate", fake_deflate)


@pytest.fixture
def decodes(monkeypatch):
    # For each _decode call: (piece start, bytes the writer already has).
    starts = []
    real = inflate.Loader._decode

    def _decode(self, decoder, pos, writer, sink):
        starts.append((pos, writer.received))
        return real(self, decoder, pos, writer, sink)

    monkeypatch.setattr(inflate.Loader, "_decode", _decode)
    return starts


def run(server, art, esp, config):
    cfg = {"retry_backoff_ms": 0}
    cfg.update(config)
    return update.run(URL, config=cfg, https=server, esp32=esp, running="1.0.0",
                      running_project="micropython", artifact=art, sha256=sha(IMAGE), size=len(IMAGE))


# The drop points were found by trying: the first connection breaks after that many container bytes,
# when the writer (12 KiB buffers) holds 24576 (inside piece 1, which starts at 16384) or 36864 bytes
# (inside piece 2, at 32768). The test checks it landed there, so a change of the packer shows up.
@pytest.mark.parametrize("drop_at,start", [(6500, (16384, 24576)), (9000, (32768, 36864))])
@pytest.mark.parametrize("hashed", [False, True])
def test_resume_inside_a_piece_by_less_than_a_writer_buffer(decodes, drop_at, start, hashed):
    blob = zimage.pack_image(IMAGE, piece_log2=14)
    server = fakes.FakeServer(blob, plans=[{"drop_after": drop_at}], max_read=300)
    esp = fakes.make_device(SLOT)
    art = artifact(file_sha256=sha(blob), file_size=len(blob)) if hashed else artifact()
    result = run(server, art, esp, {"chunk_size": 12288})
    assert decodes == [(0, 0), start]  # the resume starts 8 KiB / 4 KiB before the writer's end
    assert result["result"] == "ok" and result["bytes"] == len(IMAGE)
    assert bytes(esp.slots["ota_1"].data[:len(IMAGE)]) == IMAGE
    assert esp.boot == "ota_1"
    assert [s for _, s, _ in server.opens] == [0, zimage.parse_header(blob)["index"][start[0] >> 14][0]]


@pytest.mark.parametrize("drop_at,start", [(270, (16384, 24576)), (330, (32768, 36864))])
def test_a_patch_resume_inside_a_piece_by_less_than_a_writer_buffer(decodes, drop_at, start):
    # The same through delta.Patch (a 350-byte patch): the piece's base position, then 8 KiB / 4 KiB
    # decoded again and dropped.
    blob = zimage.pack_patch(BASE, IMAGE, piece_log2=14)
    esp = fakes.make_device(SLOT)
    esp.slots["ota_0"].data[:len(BASE)] = BASE
    server = fakes.FakeServer(blob, plans=[{"drop_after": drop_at}], max_read=300)
    result = run(server, artifact("delta", base_sha256=sha(BASE)), esp, {"chunk_size": 12288})
    assert decodes == [(0, 0), start]
    assert result["result"] == "ok"
    assert bytes(esp.slots["ota_1"].data[:len(IMAGE)]) == IMAGE


def test_a_flash_error_while_hashing_the_running_slot_is_io_error_not_a_drop(monkeypatch):
    blob = zimage.pack_patch(BASE, IMAGE, piece_log2=14)
    esp = fakes.make_device(SLOT)
    esp.slots["ota_0"].data[:len(BASE)] = BASE
    real = esp.Partition.readblocks

    def readblocks(self, block, buf, offset=0):
        if self.slot.label == "ota_0":  # the running slot, which only delta.Patch reads
            raise OSError(5, "EIO")
        return real(self, block, buf, offset)

    monkeypatch.setattr(esp.Partition, "readblocks", readblocks)
    server = fakes.FakeServer(blob)
    with pytest.raises(OtaError) as e:
        run(server, artifact("delta", base_sha256=sha(BASE)), esp, {"retries": 3})
    assert e.value.reason == "io_error"
    assert len(server.opens) == 1  # the flash's error: not retried as a dropped connection
    assert esp.boot == "ota_0" and esp.slots["ota_1"].set_boot_calls == 0
