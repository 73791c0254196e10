"""ota.update.run: which reason each end check gives and what the target slot holds after it (pinned
after `make mutate`, issue 15). CPython with the scripted server and the fake NOR flash of
host_tests/fakes.py, images from fakes.build_image (small: this file runs once per mutant)."""
import hashlib
import struct
import types

import pytest

import fakes
from ota import image_verify, update
from ota.errors import OtaError

SLOT = 16 * 4096
URL = "https://fw.example/fw.bin"
FAST = {"retry_backoff_ms": 0, "progress_bytes": 8192}
IMG = fakes.build_image("1.1.0", payload_size=20000)


def run(server, esp=None, config=None, url=URL, **kw):
    esp = esp or fakes.make_device(SLOT)
    cfg = dict(FAST)
    cfg.update(config or {})
    kw.setdefault("running", "1.0.0")
    kw.setdefault("running_project", "ota-test")
    return update.run(url, config=cfg, https=server, esp32=esp, **kw), esp


def reason(esp, server, **kw):
    with pytest.raises(OtaError) as e:
        run(server, esp=esp, **kw)
    return e.value.reason


def never_bootable(esp):
    assert esp.boot == "ota_0" and esp.slots["ota_1"].set_boot_calls == 0
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


def test_ok_result():
    result, esp = run(fakes.FakeServer(IMG), sha256=hashlib.sha256(IMG).hexdigest().upper(), size=len(IMG))
    assert result == {"result": "ok", "version": "1.1.0", "bytes": len(IMG), "slot": "ota_1",
                      "sha256": hashlib.sha256(IMG).hexdigest(), "restarts": 0}
    assert esp.boot == "ota_1"


def test_no_sha256_given_still_reports_it():
    result, _ = run(fakes.FakeServer(IMG))
    assert result["sha256"] == hashlib.sha256(IMG).hexdigest()


def test_a_trigger_size_of_exactly_the_slot_is_not_too_large():
    # size == slot: allowed by the size check before the download (the server's answer then
    # disagrees with it: size_mismatch); one byte more is too_large before any connection
    esp = fakes.make_device(SLOT)
    server = fakes.FakeServer(IMG)
    assert reason(esp, server, size=SLOT) == "size_mismatch" and len(server.opens) == 1
    server = fakes.FakeServer(IMG)
    assert reason(esp, server, size=SLOT + 1) == "too_large" and server.opens == []


def test_an_image_too_big_for_the_slot_without_a_content_length():
    # no total from the server: the streaming verifier finds it at the last segment header,
    # long before the slot would fill
    big = fakes.build_image("1.1.0", payload_size=SLOT)
    esp = fakes.make_device(SLOT)
    server = fakes.FakeServer(big, plans=[{"total": None}])
    assert reason(esp, server) == "too_large"
    assert esp.slots["ota_1"].total_erases == 0  # refused inside the first buffer
    assert esp.boot == "ota_0"


def test_short_and_long_downloads_against_the_trigger_size():
    # a server that never says its size (chunked): the byte count is checked at the end
    server = fakes.FakeServer(IMG, plans=[{"total": None}] * 10)
    esp = fakes.make_device(SLOT)
    assert reason(esp, server, size=len(IMG) + 1, config={"retries": 1}) == "truncated"
    never_bootable(esp)
    padded = IMG + b"\xff" * 16  # more bytes than the trigger said (the image itself is whole)
    esp = fakes.make_device(SLOT)
    assert reason(esp, fakes.FakeServer(padded, plans=[{"total": None}] * 10), size=len(IMG)) == "size_mismatch"
    never_bootable(esp)


def test_only_the_appended_hash_wrong_is_bad_image_hash():
    # The checksum is right, the appended SHA-256 is not: the flash holds what came, so it is the
    # file's fault (bad_image_hash), not the flash's (readback_mismatch)
    bad = IMG[:-1] + bytes([IMG[-1] ^ 1])
    esp = fakes.make_device(SLOT)
    assert reason(esp, fakes.FakeServer(bad)) == "bad_image_hash"
    never_bootable(esp)


def first_block_reads_back(monkeypatch, esp, change):
    # The new slot's first block reads back changed by change(buf): the flash lost what was written.
    part_cls = esp.Partition
    real_read = part_cls.readblocks

    def readblocks(self, block, buf, offset=0):
        real_read(self, block, buf, offset)
        if self.slot.label == "ota_1" and block == 0:
            change(buf)
    monkeypatch.setattr(part_cls, "readblocks", readblocks)


def test_a_flash_that_reads_back_another_structure(monkeypatch):
    # the segment count changes between the write and the read-back: the read-back's verifier
    # raises, and that is the flash's fault
    esp = fakes.make_device(SLOT)
    first_block_reads_back(monkeypatch, esp, lambda buf: buf.__setitem__(1, 0))  # no segments
    assert reason(esp, fakes.FakeServer(IMG)) == "readback_mismatch"
    never_bootable(esp)


def test_set_boot_failing_otherwise_is_io_error(monkeypatch):
    esp = fakes.make_device(SLOT)

    def set_boot(self):
        raise OSError(-1, "ESP_FAIL")

    monkeypatch.setattr(esp.Partition, "set_boot", set_boot)
    assert reason(esp, fakes.FakeServer(IMG)) == "io_error"
    never_bootable(esp)


def test_memory_error_is_low_memory_and_the_slot_is_dropped(monkeypatch):
    fed = []

    def feed(self, chunk):
        fed.append(1)
        if len(fed) == 3:
            raise MemoryError()

    monkeypatch.setattr(image_verify.Verifier, "feed", feed)
    esp = fakes.make_device(SLOT)
    assert reason(esp, fakes.FakeServer(IMG)) == "low_memory"
    never_bootable(esp)


def test_a_flash_that_fails_again_on_invalidate_reports_the_first_error(monkeypatch):
    esp = fakes.make_device(SLOT)
    real_ioctl = esp.Partition.ioctl

    def ioctl(self, cmd, arg):
        if cmd == 6:
            raise OSError(-1, "ESP_FAIL")
        return real_ioctl(self, cmd, arg)

    monkeypatch.setattr(esp.Partition, "ioctl", ioctl)
    assert reason(esp, fakes.FakeServer(IMG), sha256="00" * 32) == "bad_sha256"
    assert esp.boot == "ota_0" and esp.slots["ota_1"].set_boot_calls == 0


def test_nothing_written_nothing_erased_on_a_header_refusal():
    esp = fakes.make_device(SLOT)
    before = bytes(esp.slots["ota_1"].data)
    wrong = bytearray(IMG)
    struct.pack_into("<H", wrong, 12, 9)  # an ESP32-S3 image
    assert reason(esp, fakes.FakeServer(bytes(wrong))) == "wrong_chip"
    assert esp.slots["ota_1"].total_erases == 0 and bytes(esp.slots["ota_1"].data) == before


class ContextServer(fakes.FakeServer):
    def __init__(self, content):
        super().__init__(content)
        self.made = []
        self.given = []

    def context(self, ca_path):
        self.made.append(ca_path)
        return "ctx(%s)" % ca_path

    def open(self, url, tls_context=None, **kw):
        self.given.append(tls_context)
        return super().open(url, tls_context=tls_context, **kw)


def test_one_tls_context_for_an_https_url_none_for_http():
    server = ContextServer(IMG)
    run(server, config={"ca_path": "my.der"})
    assert server.made == ["my.der"] and server.given == ["ctx(my.der)"]
    server = ContextServer(IMG)
    run(server, url="http://fw.example/fw.bin", config={"allow_http": True})
    assert server.made == [] and server.given == [None]


def test_open_gets_the_configured_connection_settings():
    seen = []

    class Server(fakes.FakeServer):
        def open(self, url, **kw):
            seen.append({k: kw.get(k) for k in ("token", "ca_path", "token_origin", "allow_http",
                                                   "connect_timeout", "read_timeout")})
            return super().open(url, **kw)

    cfg = {"ca_path": "c.der", "token_origin": "https://fw.example", "allow_http": True,
           "connect_timeout": 3, "read_timeout": 4}
    run(Server(IMG), config=cfg, token="tok")
    assert seen == [dict(cfg, token="tok")]


def test_running_identity_from_the_slot_for_whichever_is_not_given(monkeypatch):
    from ota import version

    monkeypatch.setattr(version, "read_descriptor", lambda part: {"version": "1.1.0", "project_name": "ota-test"})
    result, _ = run(fakes.FakeServer(IMG), running=None, running_project="ota-test")
    assert result["result"] == "same_version"  # the slot's version, 1.1.0
    result, _ = run(fakes.FakeServer(IMG), running="1.0.0", running_project=None)
    assert result["result"] == "ok"  # the slot's project, ota-test; the version given
    monkeypatch.setattr(version, "read_descriptor", lambda part: {"version": "1.1.0", "project_name": "other"})
    esp = fakes.make_device(SLOT)
    assert reason(esp, fakes.FakeServer(IMG), running=None, running_project=None) == "wrong_product"


def test_an_unreadable_running_slot_is_an_unknown_identity(monkeypatch):
    from ota import version

    def broken(part):
        raise OSError(5, "EIO")

    monkeypatch.setattr(version, "read_descriptor", broken)
    esp = fakes.make_device(SLOT)
    # project unknown: compat refuses every image for it (rather than guess)
    assert reason(esp, fakes.FakeServer(IMG), running=None, running_project=None) == "wrong_product"


def test_an_artifact_without_encoding_is_the_plain_download():
    result, _ = run(fakes.FakeServer(IMG), artifact={"encoding": None})
    assert result["result"] == "ok"
    result, _ = run(fakes.FakeServer(IMG), artifact={})
    assert result["result"] == "ok"


def test_a_file_shorter_than_an_image_header_is_truncated_and_nothing_is_written():
    # 100 bytes: the header check (0x100 bytes) never ran, the bytes never left the buffer. The end
    # check says so with the count, and the flash was never touched (no catalogued test reached it)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(IMG[:100]), esp=esp)
    assert (e.value.reason, e.value.detail) == ("truncated", "100 bytes: not even an image header")
    assert esp.slots["ota_1"].total_erases == 0 and esp.slots["ota_1"].writeblocks_calls == []
    assert esp.boot == "ota_0" and esp.slots["ota_1"].set_boot_calls == 0


def test_a_read_back_segment_that_runs_past_the_slot_is_named(monkeypatch):
    # The read-back is checked against the slot as the download was: a segment 0 that reads back
    # longer than the slot is refused at its header, and the detail names what the flash got wrong
    # (mutants _ReadBack.__init__ _3, verify_and_commit _31 checked the read-back without the slot)
    esp = fakes.make_device(SLOT)
    # segment 0's length, past the slot's end
    first_block_reads_back(monkeypatch, esp, lambda buf: struct.pack_into("<I", buf, 28, 2 * SLOT))
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(IMG), esp=esp)
    assert (e.value.reason, e.value.detail) == ("readback_mismatch", "slot ota_1: too_large")
    never_bootable(esp)


def test_an_unreadable_running_version_lets_a_trigger_naming_the_project_through(monkeypatch):
    # The running slot's descriptor cannot be read: its version is unknown, which compat lets through
    # (nothing to compare with), so a trigger that names the project installs the image (mutant
    # _running_identity _3 made the unknown version a string that does not parse: bad_version)
    from ota import version

    def broken(part):
        raise OSError(5, "EIO")

    monkeypatch.setattr(version, "read_descriptor", broken)
    result, esp = run(fakes.FakeServer(IMG), running=None, running_project=None, project="ota-test")
    assert (result["result"], result["version"]) == ("ok", "1.1.0") and esp.boot == "ota_1"


# ---- session 21 ----------------------------------------------------------------------------------

def test_an_update_aimed_at_the_running_slot_is_refused_as_such():
    # The writer refuses the running slot before it exists: the caller gets running_slot, not an
    # error from the clean-up that follows (mutant _Update.__init__ _7 started the writer as "": the
    # clean-up's `writer.sectors_erased` then raised AttributeError)
    esp = fakes.make_device(SLOT)
    running = esp.Partition(esp.Partition.RUNNING)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(IMG), esp=esp, target=running)
    assert e.value.reason == "running_slot"
    assert esp.slots["ota_0"].total_erases == 0 and esp.boot == "ota_0"


def test_a_segment_0_longer_than_the_slot_is_refused_by_the_header_check():
    # image.check_header gets the slot's size: the refusal names segment 0 (mutant check_header _3
    # passed None and left it to the verifier, whose detail is "image needs at least ...")
    big = fakes.build_image("1.1.0", payload_size=4000)
    seg0 = struct.unpack_from("<I", big, 28)[0]
    big = big[:28] + struct.pack("<I", seg0 + SLOT) + big[32:]
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(big), esp=esp)
    assert (e.value.reason, e.value.detail) == (
        "too_large", "segment 0 alone needs %d bytes, the slot holds %d" % (24 + 8 + seg0 + SLOT + 1 + 32, SLOT))
    assert esp.slots["ota_1"].writeblocks_calls == []


def test_the_configured_chip_revision_is_checked_against_the_image():
    # ota.chip_rev set: an image that needs a later revision (fakes' images: v0.3 and up) is refused
    # before a byte is written, one for this revision goes ahead (mutants check_header _4, _6, _7
    # dropped chip_rev or passed it as the slot size)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(IMG), esp=esp, config={"chip_rev": 2})
    assert e.value.reason == "chip_revision" and esp.slots["ota_1"].writeblocks_calls == []
    result, _ = run(fakes.FakeServer(IMG), config={"chip_rev": 3})
    assert result["result"] == "ok"


def test_a_file_of_exactly_a_header_is_judged_by_that_header():
    # 0x100 bytes are all check_header needs: a file that ends there is refused for what its header
    # says (here: another chip), not as truncated before a header (mutant feed _5 waited for a byte more)
    other = fakes.build_image("1.1.0", payload_size=4000, chip_id=9)[:0x100]
    esp = fakes.make_device(SLOT)
    assert reason(esp, fakes.FakeServer(other)) == "wrong_chip"


def test_the_image_is_hashed_once_on_the_read_back_not_while_streaming(monkeypatch):
    # The design's passes over the data (docs/MEMORY.md): no SHA-256 while streaming (in software it
    # costs as much as the download), one over the read-back for the image's appended hash (mutants
    # restart _5, _6 made the streaming verifier hash too: two passes)
    hashed = []
    real = image_verify.hashlib.sha256

    class Counting:
        def __init__(self):
            self.sha = real()
            hashed.append(0)
            self.i = len(hashed) - 1

        def update(self, data):
            hashed[self.i] += len(data)
            self.sha.update(data)

        def digest(self):
            return self.sha.digest()

    monkeypatch.setattr(image_verify, "hashlib", types.SimpleNamespace(sha256=Counting))  # its own only
    result, _ = run(fakes.FakeServer(IMG))
    assert result["result"] == "ok"
    assert hashed == [len(IMG) - 32]  # one verifier hashed, the read-back's: the image up to its hash


def test_a_running_project_given_wins_over_the_slots_even_when_the_version_is_read(monkeypatch):
    # running=None makes update.run read the slot for the version; the project the caller gave is
    # still the one compared (mutant run _24 took the slot's project as well)
    from ota import version

    monkeypatch.setattr(version, "read_descriptor", lambda part: {"version": "1.0.0", "project_name": "other"})
    result, _ = run(fakes.FakeServer(IMG), running=None, running_project="ota-test")
    assert result["result"] == "ok"


def _compressed(monkeypatch):
    # An OTAZ container of IMG (docs/COMPRESSED.md), with the CPython stand-in for `deflate`.
    import sys

    import fake_deflate
    from otactl import zimage

    monkeypatch.setitem(sys.modules, "deflate", fake_deflate)
    return zimage.pack_image(IMG), {"encoding": "deflate"}


def test_a_compressed_image_of_another_size_is_refused_before_a_byte_is_written(monkeypatch):
    # update.run hands the trigger's size to the loader, which compares it with the container's
    # header, before the first erase (mutant run _102 passed None: the end check caught it only after
    # the whole image was written)
    blob, art = _compressed(monkeypatch)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(blob), esp=esp, artifact=art, size=len(IMG) + 4)
    assert (e.value.reason, e.value.detail) == ("size_mismatch", "trigger size %d, container's image %d"
                                                % (len(IMG) + 4, len(IMG)))
    assert esp.slots["ota_1"].writeblocks_calls == []


def test_a_compressed_image_with_another_sha256_is_refused_before_a_byte_is_written(monkeypatch):
    # the same for the trigger's sha256 against the container's image hash (mutant run _103)
    blob, art = _compressed(monkeypatch)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(blob), esp=esp, artifact=art, sha256="00" * 32)
    assert (e.value.reason, e.value.detail) == ("bad_sha256", "the container is of another image")
    assert esp.slots["ota_1"].writeblocks_calls == []


def test_a_compressed_download_feeds_the_watchdog_as_a_plain_one(monkeypatch):
    # The watchdog's feed reaches the loader of a compressed image too: every chunk decoded, then
    # every buffer read back (mutants run _109, _119 left the loader without it: only the read-back fed)
    blob, art = _compressed(monkeypatch)
    fed = []
    server = fakes.FakeServer(blob)
    result, _ = run(server, artifact=art, feed=lambda: fed.append(1))
    assert result["result"] == "ok" and server.opens[0][0] == URL  # (run _100 gave it no URL)
    chunks = (len(IMG) + 4095) // 4096
    assert len(fed) >= 2 * chunks


def test_the_server_is_asked_for_the_triggers_url():
    # (mutant run _121 gave the download no URL: the scripted server answers any)
    server = fakes.FakeServer(IMG)
    run(server, url="https://fw.example/a/b.bin?v=2")
    assert [u for u, _, _ in server.opens] == ["https://fw.example/a/b.bin?v=2"]


def test_the_same_version_answer_in_full():
    # what jobrun reports for it: nothing written, and the slot that would have been written
    # (mutants run _152 to _156 renamed or changed "bytes" and "slot")
    result, esp = run(fakes.FakeServer(IMG), running="1.1.0")
    assert result == {"result": "same_version", "version": "1.1.0", "bytes": 0, "slot": "ota_1"}
    assert esp.slots["ota_1"].writeblocks_calls == []


def test_a_reconnect_checks_the_heap_of_the_device_it_runs_on(monkeypatch):
    # update.run hands its esp32 to the download: the heap check before a reconnect asks that
    # device's IDF heap (mutant run _125 passed None: on CPython that skips the IDF check)
    from ota import fetch

    asked = []
    real = fetch.heap.check
    monkeypatch.setattr(fetch.heap, "check", lambda need, esp32=None: asked.append(esp32) or real(need, esp32))
    esp = fakes.make_device(SLOT)
    result, _ = run(fakes.FakeServer(IMG, plans=[{"drop_after": 5000}]), esp=esp)
    assert result["result"] == "ok" and len(asked) == 2  # before the first connection, then the reconnect
    assert asked[0] is esp and asked[1] is esp
