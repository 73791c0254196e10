# update.run with fakes: a scripted HTTPS server, a fake esp32 with NOR partitions, real images
# (otactl.firmware_image) and the real image/version modules. Every failure must leave the boot
# slot alone and the target slot unbootable.
import errno
import hashlib

import pytest

import fakes
from ota import heap, update
from ota.errors import OtaError

SLOT = 0x40000
URL = "https://fw.example/fw.bin"
FAST = {"retry_backoff_ms": 0, "progress_bytes": 8192}

try:
    from devkit.images import build_image as _real_build
except ImportError:  # being written: fall back on the fakes' builder
    _real_build = None


def make_image(version="1.1.0", size=48000):
    if _real_build is not None:
        return _real_build(version, size=size)
    return fakes.build_image(version, payload_size=size - 600)


def run(server, esp=None, running="1.0.0", config=None, running_project="micropython", **kw):
    # running_project: what make_image's images carry (firmware_image.PRODUCT); the fake running
    # slot holds no app descriptor.
    esp = esp or fakes.make_device(SLOT)
    cfg = dict(FAST)
    cfg.update(config or {})
    result = update.run(URL, config=cfg, https=server, esp32=esp, running=running,
                        running_project=running_project, **kw)
    return result, esp


def sha(data):
    return hashlib.sha256(data).hexdigest()


def assert_untouched(esp):
    # the boot slot never changed, set_boot never called, the target's sector 0 erased if written
    assert esp.boot == "ota_0"
    assert esp.slots["ota_1"].set_boot_calls == 0
    assert esp.slots["ota_0"].total_erases == 0


def test_ok_writes_exact_image_and_sets_boot():
    img = make_image()
    server = fakes.FakeServer(img)
    seen = []
    result, esp = run(server, sha256=sha(img).upper(), size=len(img), version="1.1.0",
                      progress=lambda done, total: seen.append((done, total)))
    assert result == {"result": "ok", "version": "1.1.0", "bytes": len(img), "slot": "ota_1",
                      "sha256": sha(img), "restarts": 0}
    slot = esp.slots["ota_1"]
    assert bytes(slot.data[:len(img)]) == img
    sectors = (len(img) + 4095) // 4096
    assert slot.erases[:sectors] == [1] * sectors and slot.total_erases == sectors
    assert slot.dirty_programs == 0
    assert esp.boot == "ota_1" and slot.set_boot_calls == 1
    assert server.opens[0][1] == 0 and len(server.opens) == 1
    assert server.responses[0].closed
    assert seen[-1] == (len(img), len(img)) and len(seen) < len(img) // 4096  # rate-limited


def test_bad_sha256_invalidates_and_never_sets_boot():
    img = make_image()
    server = fakes.FakeServer(img)
    with pytest.raises(OtaError) as e:
        run(server, sha256="ab" * 32)
    assert e.value.reason == "bad_sha256"
    assert "recv=%s expect=%s" % (sha(img), "ab" * 32) in e.value.detail
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError):
        run(fakes.FakeServer(img), esp=esp, sha256="ab" * 32)
    assert_untouched(esp)
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096  # sector 0 erased: never bootable


def test_same_version_writes_nothing():
    img = make_image("1.0.0")
    esp = fakes.make_device(SLOT)
    before = bytes(esp.slots["ota_1"].data)
    result, _ = run(fakes.FakeServer(img), esp=esp, running="1.0.0")
    assert result["result"] == "same_version" and result["version"] == "1.0.0"
    assert esp.slots["ota_1"].total_erases == 0 and bytes(esp.slots["ota_1"].data) == before
    assert_untouched(esp)


def test_empty_descriptor_uses_trigger_version():
    img = make_image("")
    result, _ = run(fakes.FakeServer(img), running="1.0.0", version="1.0.0")
    assert result["result"] == "same_version"
    result, esp = run(fakes.FakeServer(img), running="1.0.0", version="1.0.1")
    assert result["result"] == "ok" and result["version"] == "1.0.1" and esp.boot == "ota_1"


def test_version_mismatch():
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(make_image("1.2.0")), esp=esp, version="1.3.0")
    assert e.value.reason == "version_mismatch"
    assert esp.slots["ota_1"].total_erases == 0
    assert_untouched(esp)


def test_downgrade_refused_then_allowed():
    img = make_image("0.9.0")
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), esp=esp, running="1.0.0")
    assert e.value.reason == "downgrade"
    assert esp.slots["ota_1"].total_erases == 0
    assert_untouched(esp)
    result, esp = run(fakes.FakeServer(img), running="1.0.0", config={"allow_downgrade": True})
    assert result["result"] == "ok" and esp.boot == "ota_1"


@pytest.mark.parametrize("drop_after", [10, 300, 4096, 5000, 20000])
@pytest.mark.parametrize("drop", [OtaError("connection_lost", "x"), OtaError("timeout", "x"),
                                  OSError(errno.ECONNRESET, "reset")])
def test_resume_after_drop_with_206(drop_after, drop):
    img = make_image()
    server = fakes.FakeServer(img, plans=[{"drop_after": drop_after, "drop": drop}])
    result, esp = run(server, sha256=sha(img), size=len(img))
    assert result["result"] == "ok" and result["sha256"] == sha(img) and result["restarts"] == 0
    assert [o[1] for o in server.opens] == [0, drop_after]  # resumed at the last byte received
    slot = esp.slots["ota_1"]
    assert bytes(slot.data[:len(img)]) == img
    sectors = (len(img) + 4095) // 4096
    assert slot.erases[:sectors] == [1] * sectors  # every sector erased once across the resume
    assert all(r.closed for r in server.responses)


def test_resume_with_short_reads():
    img = make_image()
    server = fakes.FakeServer(img, plans=[{"drop_after": 7777}], max_read=1000)
    result, esp = run(server, sha256=sha(img))
    assert result["result"] == "ok"
    assert bytes(esp.slots["ota_1"].data[:len(img)]) == img


def test_200_to_range_request_restarts_from_zero():
    img = make_image()
    server = fakes.FakeServer(img, plans=[{"drop_after": 9000}, {"ignore_range": True}])
    result, esp = run(server, sha256=sha(img), size=len(img))
    assert result["result"] == "ok" and result["sha256"] == sha(img) and result["restarts"] == 1
    assert [o[1] for o in server.opens] == [0, 9000]
    assert server.responses[1].status == 200
    slot = esp.slots["ota_1"]
    assert bytes(slot.data[:len(img)]) == img  # not appended at 9000
    assert slot.erases[:2] == [2, 2]  # the two sectors written before the drop: erased again
    assert slot.dirty_programs == 0 and esp.boot == "ota_1"


def test_206_at_the_wrong_offset_is_refused():
    img = make_image()
    esp = fakes.make_device(SLOT)
    server = fakes.FakeServer(img, plans=[{"drop_after": 9000}, {"range_start": 8192}])
    with pytest.raises(OtaError) as e:
        run(server, esp=esp)
    assert e.value.reason == "bad_response"
    assert_untouched(esp)
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


@pytest.mark.parametrize("drop,reason", [(OtaError("connection_lost", "x"), "connection_lost"),
                                         (OSError(errno.ETIMEDOUT, "t"), "timeout"),
                                         (OSError(errno.ECONNRESET, "r"), "connection_lost")])
def test_retries_exhausted(drop, reason):
    img = make_image()
    esp = fakes.make_device(SLOT)
    plans = [{"drop_after": 5000, "drop": drop}] + [{"drop_after": 0, "drop": drop}] * 10
    server = fakes.FakeServer(img, plans=plans)
    with pytest.raises(OtaError) as e:
        run(server, esp=esp, config={"retries": 3})
    assert e.value.reason == reason
    assert len(server.opens) == 1 + 3  # the first connection + `retries` reconnects without progress
    assert_untouched(esp)
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


def test_reconnect_failure_counts_as_a_retry():
    img = make_image()
    plans = [{"drop_after": 5000}, {"fail": OtaError("connect_failed", "x")}, {}]
    result, _ = run(fakes.FakeServer(img, plans=plans), sha256=sha(img))
    assert result["result"] == "ok"


@pytest.mark.parametrize("reason", ["connect_failed", "dns_failed", "tls_verify_failed", "http_404"])
def test_first_connection_failure_of_a_wrong_url_is_not_retried(reason):
    server = fakes.FakeServer(make_image(), plans=[{"fail": OtaError(reason, "x")}])
    with pytest.raises(OtaError) as e:
        run(server)
    assert e.value.reason == reason and len(server.opens) == 1


@pytest.mark.parametrize("reason", ["timeout", "connection_lost", "tls_failed"])
def test_first_connection_on_a_flaky_link_is_retried(reason):
    img = make_image()
    server = fakes.FakeServer(img, plans=[{"fail": OtaError(reason, "x")}, {"fail": OtaError(reason, "x")}, {}])
    result, _ = run(server, sha256=sha(img))
    assert result["result"] == "ok" and len(server.opens) == 3
    always = fakes.FakeServer(img, plans=[{"fail": OtaError(reason, "x")}] * 10)
    with pytest.raises(OtaError) as e:
        run(always, config={"retries": 2})
    assert e.value.reason == reason and len(always.opens) == 3  # the first try and 2 retries


def test_heap_too_low_before_any_connection():
    esp = fakes.make_device(SLOT, heap_regions=[(60000, 30000, 20000, 10000)])
    server = fakes.FakeServer(make_image())
    with pytest.raises(OtaError) as e:
        run(server, esp=esp)
    assert e.value.reason == "low_memory" and "20000" in e.value.detail
    assert server.opens == []
    assert esp.slots["ota_1"].total_erases == 0


def test_gc_heap_too_low(monkeypatch):
    monkeypatch.setattr(heap.gc, "mem_free", lambda: 1000, raising=False)
    server = fakes.FakeServer(make_image())
    with pytest.raises(OtaError) as e:
        run(server)
    assert e.value.reason == "low_memory" and server.opens == []


@pytest.mark.parametrize("code", [errno.ENOMEM, -errno.ENOMEM])  # mbedTLS may flip the sign
def test_enomem_from_open_is_low_memory(code):
    server = fakes.FakeServer(make_image(), plans=[{"fail": OSError(code, "ENOMEM")}])
    with pytest.raises(OtaError) as e:
        run(server)
    assert e.value.reason == "low_memory"


def test_content_length_too_large_before_any_write():
    esp = fakes.make_device(SLOT)
    server = fakes.FakeServer(make_image(), plans=[{"total": SLOT + 1}])
    with pytest.raises(OtaError) as e:
        run(server, esp=esp)
    assert e.value.reason == "too_large" and esp.slots["ota_1"].total_erases == 0
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(make_image()), size=SLOT + 16)
    assert e.value.reason == "too_large"


def test_size_mismatch_and_truncated():
    img = make_image()
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), size=len(img) + 16)
    assert e.value.reason == "size_mismatch"
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:  # the server's own Content-Length is short: a cut file
        run(fakes.FakeServer(img[:30000]), esp=esp)
    assert e.value.reason == "truncated"
    assert_untouched(esp)


def test_image_errors_before_anything_is_written():
    for bad, reason in [(make_image()[:0x20] + bytes(0x200), "not_app_image"),
                        (b"\x00" * 5000, "not_app_image")]:
        esp = fakes.make_device(SLOT)
        with pytest.raises(OtaError) as e:
            run(fakes.FakeServer(bad), esp=esp)
        assert e.value.reason == reason
        assert esp.slots["ota_1"].total_erases == 0


def test_bad_checksum_invalidates():
    img = bytearray(make_image())
    img[3000] ^= 0x55  # inside the payload: checksum and appended hash both break
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(bytes(img)), esp=esp)
    assert e.value.reason in ("bad_checksum", "bad_image_hash")
    assert_untouched(esp)
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


def test_readback_mismatch(monkeypatch):
    esp = fakes.make_device(SLOT)
    real_program = fakes.Slot.program

    def flaky(self, addr, buf):  # a flash that silently drops a bit in the second sector
        real_program(self, addr, buf)
        if addr == 4096:
            self.data[addr + 5] &= 0xFE if self.data[addr + 5] & 1 else 0xFD

    monkeypatch.setattr(fakes.Slot, "program", flaky)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(make_image()), esp=esp)
    assert e.value.reason == "readback_mismatch"
    assert_untouched(esp)


def test_set_boot_validation_failure(monkeypatch):
    monkeypatch.setattr(fakes, "image_is_valid", lambda data: False)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(make_image()), esp=esp)
    assert e.value.reason == "validate_failed"
    assert esp.boot == "ota_0"
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


def test_flash_error_is_io_error_not_retried(monkeypatch):
    esp = fakes.make_device(SLOT)
    calls = []

    def broken(self, addr, buf):
        calls.append(addr)
        raise OSError(-1, "ESP_FAIL")

    monkeypatch.setattr(fakes.Slot, "program", broken)
    server = fakes.FakeServer(make_image())
    with pytest.raises(OtaError) as e:
        run(server, esp=esp)
    assert e.value.reason == "io_error" and len(server.opens) == 1
    assert esp.boot == "ota_0"


def test_running_slot_from_the_device():
    # The target is whatever get_next_update says; the writer refuses it if it is the running slot.
    esp = fakes.make_device(SLOT, running="ota_1")
    result, _ = run(fakes.FakeServer(make_image()), esp=esp)
    assert result["slot"] == "ota_0" and esp.boot == "ota_0"
    assert esp.slots["ota_1"].total_erases == 0


def test_bigger_buffer():
    img = make_image(size=100000)
    result, esp = run(fakes.FakeServer(img), sha256=sha(img), config={"chunk_size": 16384})
    assert result["result"] == "ok"
    assert bytes(esp.slots["ota_1"].data[:len(img)]) == img


def test_micropython_update_loop_allocates_nothing_per_chunk(tmp_path):
    # The whole data path (readinto, sha256, image.Verifier, writer, progress) under the real
    # MicroPython on a 64 KiB-word heap: 0 GC bytes per chunk once streaming.
    from test_writer import run_mp_alloc

    fields = run_mp_alloc(tmp_path, "update")
    assert fields["steady_max"] == "0"
    assert int(fields["total"]) < 1024  # the image tail's small fields, once


def test_unparsable_version_needs_allow_downgrade():
    img = make_image("nightly")
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), running="1.0.0")
    assert e.value.reason == "bad_version"
    result, _ = run(fakes.FakeServer(img), running="1.0.0", config={"allow_downgrade": True})
    assert result["result"] == "ok" and result["version"] == "nightly"


def test_unknown_running_version_goes_ahead():
    result, _ = run(fakes.FakeServer(make_image("1.0.0")), running="")
    assert result["result"] == "ok"


def test_running_version_read_from_the_running_slot():
    esp = fakes.make_device(SLOT)
    esp.slots["ota_0"].data[:48000] = make_image("1.1.0")
    result = update.run(URL, config=FAST, https=fakes.FakeServer(make_image("1.1.0")), esp32=esp)
    assert result["result"] == "same_version"


def test_gc_heap_checked_again_during_the_stream(monkeypatch):
    # Plenty before the connection, then the heap shrinks mid-download: a clean low_memory, the slot
    # invalidated and set_boot never called, instead of a MemoryError in the middle of a flash write.
    readings = iter([10 ** 6] * 3 + [1000] * 1000)
    monkeypatch.setattr(heap.gc, "mem_free", lambda: next(readings), raising=False)
    esp = fakes.make_device(SLOT)
    img = make_image(size=200000)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), esp=esp, sha256=sha(img))
    assert e.value.reason == "low_memory" and "during the download" in e.value.detail
    assert_untouched(esp)
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


@pytest.mark.parametrize("where", ["stream", "end"])
def test_any_exception_leaves_the_boot_slot_and_an_unbootable_target(monkeypatch, where):
    # Issue 10: a UnicodeError from a header went straight through update.run and left the
    # half-written slot as it was. Whatever escapes a stage, the target's first sector is erased.
    from ota import image_verify

    img = make_image()
    if where == "stream":
        fed = []

        def boom(self, chunk):
            fed.append(len(chunk))
            if len(fed) == 3:
                raise UnicodeError("a check nobody expected to fail")

        monkeypatch.setattr(image_verify.Verifier, "feed", boom)
    else:
        def boom(self):
            raise TypeError("unsupported types for __add__: 'str', 'NoneType'")

        monkeypatch.setattr(image_verify.Verifier, "finish", boom)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), esp=esp)
    assert e.value.reason == "internal_error" and "Error" in e.value.detail, e.value
    assert_untouched(esp)
    assert esp.slots["ota_1"].total_erases > 0  # something was written ...
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096  # ... and can never boot


def test_watchdog_fed_for_every_chunk_downloaded_and_read_back():
    # A 4 KiB erase+program or readinto is the longest the data path goes without feeding it.
    img = make_image(size=48000)
    feeds = []
    result, esp = run(fakes.FakeServer(img), feed=lambda: feeds.append(1))
    chunks = (len(img) + 4095) // 4096
    assert result["result"] == "ok"
    assert len(feeds) >= 2 * chunks  # the download loop and the read-back, each chunk


def test_backoff_pauses_feed_the_watchdog(monkeypatch):
    # A backoff longer than the watchdog's timeout must not reset the board mid-job.
    from ota import fetch

    import threading

    slept, feeds = [], []
    real_sleep, this_thread = fetch.time.sleep, threading.current_thread()

    def sleep(seconds):  # time.sleep is the process's: a thread an earlier test left sleeps too
        if threading.current_thread() is this_thread:
            slept.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(fetch.time, "sleep", sleep)
    img = make_image()
    server = fakes.FakeServer(img, plans=[{"drop_after": 5000}])
    run(server, config={"retry_backoff_ms": 3500}, feed=lambda: feeds.append(len(slept)))
    assert slept == [1.0, 1.0, 1.0, 0.5], slept
    assert [0, 1, 2, 3] == sorted(set(feeds) & {0, 1, 2, 3})


def test_200_to_every_range_request_is_bounded_by_max_restarts():
    # Issue 10: a server that answers each Range request with a 200 and cuts the body a little
    # later each time made progress every time, so the retry budget never ran out and sector 0 was
    # erased again at every restart, for ever.
    img = make_image(size=120000)
    plans = [{"ignore_range": True, "drop_after": 20000 + 10000 * k} for k in range(9)]
    server = fakes.FakeServer(img, plans=plans)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(server, esp=esp, config={"max_restarts": 2})
    assert e.value.reason == "too_many_restarts", e.value
    assert len(server.opens) == 4  # the first answer, 2 restarts, the 200 that was one too many
    assert_untouched(esp)
    assert esp.slots["ota_1"].erases[0] == 3 + 1  # 3 starts from byte 0, then invalidated
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


def test_download_deadline_ends_a_trickle(monkeypatch):
    # A server that keeps sending (a byte a second) resets no retry budget but holds the device:
    # the job has an overall deadline.
    from ota import fetch

    now = [0]

    def clock():
        now[0] += 1000  # every look at the clock: a second later
        return now[0]

    monkeypatch.setattr(fetch, "ticks_ms", clock)
    img = make_image(size=120000)
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), esp=esp, config={"download_deadline_s": 10})
    assert e.value.reason == "download_deadline" and "10 s" in e.value.detail, e.value
    assert_untouched(esp)
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096
