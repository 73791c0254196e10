# ota.inflate, session 22: one bug found while reading the survivors of the run of record
# (docs/MUTATION.md, "Session 22 survivors"), and the tests that kill those survivors.
#
# The bug: a connection dropped in the few bytes just before a piece's compressed offset (the
# flush marker ending the piece before, which the decoder had not needed yet) resumed at the piece's
# offset, so the bytes between what Source had hashed and that offset were never hashed: a good
# file failed as bad_file_sha256. A resume now asks from the first byte not hashed yet (only when
# the trigger gives a file_sha256: without one nothing reads the hash) and drops it after hashing.
import struct
import sys
import zlib

import pytest

import fake_deflate
import fakes
from ota import inflate
from ota.errors import OtaError
from otactl import zimage
from test_mutants_inflate import artifact, assert_image, fails, index_offsets, make_image, run, sha


class Gc:
    def collect(self):
        pass


@pytest.fixture(autouse=True)
def deflate_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "deflate", fake_deflate)
    monkeypatch.setattr(inflate, "gc", Gc())  # a full collect under pytest costs ~0.1 s


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


# ---------------------------------------------------------------- header and index details

def _header(image_size, file_size, count):
    head = bytearray(88)
    head[0:4] = b"OTAZ"
    head[4], head[5], head[6] = 0, 12, 12
    struct.pack_into("<II", head, 8, image_size, file_size)
    struct.pack_into("<H", head, 84, count)
    return head


def test_a_count_of_32768_or_more_is_refused_for_the_header_size_it_makes():
    # parse_header__mutmut_48 (count read signed): 40,000 pieces read as -25,536, refused as a
    # count that does not fit the image instead of a header too large.
    with pytest.raises(OtaError) as e:
        inflate.parse_header(_header(40000 << 12, 1 << 30, 40000), 88)
    assert e.value.reason == "bad_container"
    assert e.value.detail == "header of %d bytes" % (88 + 8 * 40000)


def test_an_index_offset_of_2_gib_or_more_is_named_unsigned():
    # check_index__mutmut_15 (offsets read signed): the same entry refused, its offset named
    # negative; and where the container claims a file that large, accepted as the original does.
    info = {"header_size": 88 + 16, "count": 2, "file_size": 0x80000000}
    head = _header(8192, 0x80000000, 2) + struct.pack("<IIII", 88 + 16, 0, 0x80000000, 0)
    with pytest.raises(OtaError) as e:
        inflate.check_index(info, head)
    assert e.value.detail == "index entry 1: offset 2147483648"
    inflate.check_index(dict(info, file_size=0xFFFFFFFF), head)


# ---------------------------------------------------------------- sizes the server and trigger give

def test_a_server_size_other_than_the_triggers_file_size_is_named_as_the_artifacts():
    # _accept__mutmut_37 to _41, _47: the answer's size is checked against the trigger's file_size
    # before the header is read (the header's own check names the container instead).
    img = make_image()
    blob = zimage.pack_image(img)
    server = fakes.FakeServer(blob, plans=[{"total": len(blob) + 4}])
    e = fails(server, artifact(file_size=len(blob)), img)
    assert e.reason == "size_mismatch"
    assert e.detail == "server has %d bytes, the artifact %d" % (len(blob) + 4, len(blob))
    assert len(server.opens) == 1


def test_a_resume_whose_server_size_changed_is_refused():
    # _accept__mutmut_37, _38: without a trigger file_size, a resumed answer is checked against the
    # container's.
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    server = fakes.FakeServer(blob, plans=[{"drop_after": 5000}, {"total": len(blob) + 1}])
    e = fails(server, artifact(), img)
    assert e.reason == "size_mismatch"
    assert e.detail == "server has %d bytes, the artifact %d" % (len(blob) + 1, len(blob))


def test_an_answer_without_a_size_and_a_trigger_file_size():
    # _accept__mutmut_47: no size from the server (chunked) is no mismatch.
    img = make_image()
    blob = zimage.pack_image(img)
    result, esp = run(fakes.FakeServer(blob, plans=[{"total": None}]), artifact(file_size=len(blob)), img)
    assert result["result"] == "ok"
    assert_image(esp, img)


def test_a_trigger_file_size_other_than_the_containers_without_a_server_size():
    # _header__mutmut_20 to _23: with no size from the server only the header's check sees it.
    img = make_image()
    blob = zimage.pack_image(img)
    server = fakes.FakeServer(blob, plans=[{"total": None}])
    e = fails(server, artifact(file_size=len(blob) + 1), img)
    assert e.reason == "size_mismatch"
    assert e.detail == "trigger file_size %d, container %d" % (len(blob) + 1, len(blob))


# ---------------------------------------------------------------- restarts, stop, progress, the end

def test_every_200_to_a_range_request_counts_toward_max_restarts(loaders):
    # _accept__mutmut_4 (restarts = 1): the second 200 is the one over max_restarts 1.
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    plans = [{"drop_after": 5000}, {"ignore_range": True, "drop_after": 7000}, {"ignore_range": True}]
    e = fails(fakes.FakeServer(blob, plans=plans), artifact(), img, config={"max_restarts": 1})
    assert e.reason == "too_many_restarts"
    assert e.detail == "2 answers of 200 to a Range request (ota.max_restarts 1)"
    result, esp = run(fakes.FakeServer(blob, plans=plans), artifact(), img, config={"max_restarts": 2})
    assert result["result"] == "ok"
    assert loaders[-1].restarts == 2


def test_the_same_version_compressed_stops_before_anything_is_written():
    # _decode__mutmut_64: the sink stopping the update (its header check) is passed on as stopped.
    img = make_image(version="1.0.0")  # the running version (test_mutants_inflate.run)
    blob = zimage.pack_image(img)
    result, esp = run(fakes.FakeServer(blob), artifact(), img)
    assert result["result"] == "same_version" and result["bytes"] == 0
    assert esp.boot == "ota_0" and esp.slots["ota_1"].set_boot_calls == 0


def test_progress_is_reported_every_progress_bytes_exactly():
    # _decode__mutmut_74: a chunk that lands exactly on the next report is reported.
    img = make_image()
    seen = []
    result, esp = run(fakes.FakeServer(zimage.pack_image(img)), artifact(), img,
                      config={"progress_bytes": 4096}, progress=lambda done, total: seen.append(done))
    assert result["result"] == "ok"
    assert seen == [4096 * k for k in range(1, len(img) // 4096 + 1)] + [len(img)]


def _container(pieces_of, image_size, finish=True):
    # An OTAZ file whose stream is pieces_of (the decompressed data) but whose header says the
    # image is its first image_size bytes; finish=False ends the stream with a flush, not its end.
    piece = 4096
    pieces = [pieces_of[i:i + piece] for i in range(0, len(pieces_of), piece)]
    comp = zlib.compressobj(9, zlib.DEFLATED, -12, 9)
    stream, offsets = b"", []
    for i, p in enumerate(pieces):
        offsets.append(len(stream))
        last = i == len(pieces) - 1
        stream += comp.compress(p) + comp.flush(zlib.Z_FINISH if last and finish else zlib.Z_FULL_FLUSH)
    head_len = 88 + 8 * len(pieces)
    index = [(head_len + off, 0) for off in offsets]
    return zimage._header(0, 12, 12, pieces_of[:image_size], head_len + len(stream), index) + stream


def test_the_last_read_asks_for_one_byte_past_the_image_only():
    # _decode__mutmut_40, _43: a stream that goes one byte past the image and then needs more
    # input is refused for that byte; reading further would run into the file's end first.
    img = make_image()
    blob = _container(img, len(img) - 1, finish=False)
    short = img[:-1]
    e = fails(fakes.FakeServer(blob), artifact(file_sha256=sha(blob)), short)
    assert e.reason == "bad_compressed"
    assert e.detail == "the stream decodes to more than the image's %d bytes" % len(short)


def test_a_truncated_image_is_truncated_not_completed_from_the_buffer():
    # _decode__mutmut_62, _63: the last chunk goes to the image checks as the n bytes decoded, not
    # the whole free buffer (whose stale bytes would complete the image's structure).
    img = make_image()
    short = img[:-100]
    blob = zimage.pack_image(short, piece_log2=12)
    e = fails(fakes.FakeServer(blob), artifact(), short)
    assert e.reason == "truncated"
    assert e.detail == "got %d of the %d bytes of the image" % (len(short), len(img))


# ---------------------------------------------------------------- the retry loop

def test_one_retry_is_one_more_connection_after_a_failure():
    # _run__mutmut_2 (failures start at 1): ota.retries 1 allows one reconnect after a failure.
    img = make_image()
    blob = zimage.pack_image(img)
    server = fakes.FakeServer(blob, plans=[{"fail": OtaError("connection_lost", "peer closed")}])
    result, esp = run(server, artifact(), img, config={"retries": 1})
    assert result["result"] == "ok" and len(server.opens) == 2


def test_the_backoff_doubles_up_to_32_times_and_feeds_the_watchdog(monkeypatch):
    # _run__mutmut_92, _95, _102, _104: the pause after the k-th failure in a row is
    # retry_backoff_ms << min(k - 1, 5), fed by the job's watchdog.
    pauses = []
    monkeypatch.setattr(inflate, "_pause", lambda ms, feed: pauses.append((ms, feed)))
    img = make_image()
    blob = zimage.pack_image(img)
    cut = OtaError("connection_lost", "peer closed")
    server = fakes.FakeServer(blob, plans=[{"fail": cut}] * 8)

    def feed():
        pass

    result, esp = run(server, artifact(), img, config={"retries": 8, "retry_backoff_ms": 100}, feed=feed)
    assert result["result"] == "ok"
    assert pauses == [(100 << min(k, 5), feed) for k in range(8)]


def test_between_connections_the_heap_is_checked_for_min_free_with_the_devices_heap(monkeypatch):
    # _run__mutmut_105, _106, _108: heap.check(ota.min_free, esp32=the device) before reconnecting.
    from ota import heap

    calls = []
    real = heap.check

    def check(required, esp32=None):
        calls.append((required, esp32))
        return real(required, esp32=esp32)

    monkeypatch.setattr(heap, "check", check)
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    esp = fakes.make_device(0x40000)
    result, esp = run(fakes.FakeServer(blob, plans=[{"drop_after": 5000}]), artifact(), img, esp=esp,
                      config={"min_free": 12345})
    assert result["result"] == "ok"
    assert calls == [(12345, esp), (12345, esp)]  # update.run's, then the retry loop's


def test_a_socket_error_is_named_by_https_when_the_retries_run_out():
    # _run__mutmut_61, _64: an OSError from the socket is https.reason's (connection_lost), not
    # from_oserror's io_error.
    img = make_image()
    blob = zimage.pack_image(img, piece_log2=12)
    reset = OSError(104, "reset")
    e = fails(fakes.FakeServer(blob, plans=[{"drop_after": 5000, "drop": reset}]), artifact(), img,
              config={"retries": 0})
    assert e.reason == "connection_lost"
    assert e.detail == str(reset)


# ---------------------------------------------------------------- the fallback

class ByUrl(fakes.FakeServer):
    # One file per URL.
    def __init__(self, files, plans=()):
        super().__init__(None, plans)
        self.files = files

    def open(self, url, **kw):
        self.content = self.files[url]
        return super().open(url, **kw)


FALLBACK = "https://fw.example/fw.bin"
URL_OF_BLOB = "https://fw.example/fw.otaz"  # the URL test_mutants_inflate.run asks for


def _patch_for_another_base():
    # A patch whose base is not what the running slot holds (fakes: an erased slot): wrong_base.
    base = make_image(version="0.9.0")
    img = make_image()
    return zimage.pack_patch(base, img, piece_log2=12), base, img


def test_a_deflate_fallback_is_read_as_deflate():
    # run__mutmut_25 to _28: the fallback's encoding is "deflate" (a patch there is refused naming it).
    blob, base, img = _patch_for_another_base()
    art = artifact("delta", base_sha256=sha(base), fallback=URL_OF_BLOB, fallback_encoding="deflate")
    e = fails(ByUrl({URL_OF_BLOB: blob, FALLBACK: img}), art, img)
    assert e.reason == "bad_container"
    assert e.detail == "container kind 1, trigger encoding deflate"



def test_a_plain_fallback_gets_the_size_progress_watchdog_and_device(monkeypatch):
    # run__mutmut_48, _51, _52, _54, _62: the plain Download of the fallback gets the trigger's
    # size, the progress callback, the watchdog's feed and the device (its heap checks).
    from ota import heap

    checks = []
    real = heap.check

    def check(required, esp32=None):
        checks.append(esp32)
        return real(required, esp32=esp32)

    monkeypatch.setattr(heap, "check", check)
    blob, base, img = _patch_for_another_base()
    server = ByUrl({URL_OF_BLOB: blob, FALLBACK: img}, plans=[{}, {"drop_after": 9000}])
    fed, seen = [], []
    art = artifact("delta", base_sha256=sha(base), fallback=FALLBACK)
    esp = fakes.make_device(0x40000)
    def feed():  # the connection the watchdog is fed in, and whether its answer is still coming
        fed.append((len(server.opens), server.responses[-1].pos < server.responses[-1].length))

    result, esp = run(server, art, img, esp=esp, feed=feed, progress=lambda done, total: seen.append(done))
    assert result["result"] == "ok"
    assert_image(esp, img)
    assert [u for u, _, _ in server.opens] == [URL_OF_BLOB, FALLBACK, FALLBACK]
    assert checks == [esp, esp]  # update.run's, the fallback's retry loop's
    assert seen and seen[-1] == len(img)
    assert fed.count((3, True)) >= 2  # fed while the fallback's second answer came (not only the read-back)
    server = ByUrl({URL_OF_BLOB: blob, FALLBACK: img + bytes(16)})
    e = fails(server, art, img)
    assert e.reason == "size_mismatch"
    assert e.detail == "server has %d bytes, trigger says %d" % (len(img) + 16, len(img))
