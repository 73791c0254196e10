# ota.inflate, session 22: one bug found while reading the survivors of the run of record
# (docs/MUTATION.md, "Session 22 survivors"), and the tests that kill those survivors.
#
# The bug: a connection dropped in the few bytes just before a piece's compressed offset (the
# flush marker ending the piece before, which the decoder had not needed yet) resumed at the piece's
# offset, so the bytes between what Source had hashed and that offset were never hashed: a good
# file failed as bad_file_sha256. A resume now asks from the first byte not hashed yet (only when
# the trigger gives a file_sha256: without one nothing reads the hash) and drops it after hashing.
import sys

import pytest

import fake_deflate
import fakes
from ota import inflate
from otactl import zimage
from test_mutants_inflate import artifact, assert_image, index_offsets, make_image, run, sha


class Gc:
    def collect(self):
        pass


@pytest.fixture(autouse=True)
def deflate_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "deflate", fake_deflate)
    monkeypatch.setattr(inflate, "gc", Gc())  # a full collect under pytest costs ~0.1 s


@pytest.fixture
def loaders(monkeypatch):
    made = []

    class Recorded(inflate.Loader):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)

    monkeypatch.setattr(inflate, "Loader", Recorded)
    return made


# ---------------------------------------------------------------- the bug: a drop just before a piece

# With this image and 4 KiB pieces a drop 1 to 6 bytes before piece 1's offset leaves the writer
# exactly at the piece boundary (its first 4 KiB out) with Source short of the piece's offset; at 7
# the writer is not there yet and the resume starts at piece 0 (checked below).
@pytest.mark.parametrize("short", [1, 2, 3, 6])
def test_a_drop_just_before_a_piece_hashes_the_bytes_up_to_it(loaders, short):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    piece1 = index_offsets(blob)[1]
    server = fakes.FakeServer(blob, plans=[{"drop_after": piece1 - short}])
    result, esp = run(server, artifact(file_sha256=sha(blob), file_size=len(blob)), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert [s for _, s, _ in server.opens] == [0, piece1 - short]  # from the first byte not hashed
    loader = loaders[0]
    assert loader.src.hashed == len(blob)
    assert loader.downloaded == len(blob)  # each byte once: none asked for twice


def test_without_a_file_sha256_the_resume_asks_for_the_piece_itself():
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    piece1 = index_offsets(blob)[1]
    server = fakes.FakeServer(blob, plans=[{"drop_after": piece1 - 3}])
    result, esp = run(server, artifact(), img)
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert [s for _, s, _ in server.opens] == [0, piece1]


def test_a_200_to_a_resume_before_a_piece_is_dropped_up_to_the_piece(loaders):
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    piece1 = index_offsets(blob)[1]
    server = fakes.FakeServer(blob, plans=[{"drop_after": piece1 - 3}, {"ignore_range": True}])
    result, esp = run(server, artifact(file_sha256=sha(blob)), img, config={"max_restarts": 1})
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert [s for _, s, _ in server.opens] == [0, piece1 - 3]
    assert loaders[0].restarts == 1 and loaders[0].src.hashed == len(blob)
