# Boundaries of the device package that no other test pins, each at the exact bound and one past it
# (issue 15: a mutation run showed `>` and `>=` could be swapped there unnoticed). CPython with the
# fakes; the trigger limits also run through the real MicroPython binary (test_trigger's driver).
import json
import os
import struct

import pytest

import fakes
from ota import health, image, jobs, signature, trigger, update
from ota.errors import OtaError
from ota.image_verify import Verifier
from ota.writer import SlotWriter
from otactl import signing
from ota.errors import OtaError as HostError
from paths import MICROPYTHON
from test_trigger import parse_on_micropython
from test_writer import put

SLOT = 0x40000
URL = "https://fw.example/fw.bin"
FAST = {"retry_backoff_ms": 0, "progress_bytes": 8192}
PROJECT = "ota-test"  # what fakes.build_image writes into the app descriptor (compat.check matches it)


def reason_of(fn, *args, **kw):
    with pytest.raises(OtaError) as e:
        fn(*args, **kw)
    return e.value.reason


# ---------------------------------------------------------------- trigger: lengths at the bound

def padded_trigger(total, **fields):
    # A valid trigger of exactly `total` bytes: an unknown field (dropped by the parser) pads it.
    msg = {"type": "ota_trigger", "url": "https://fw.example/fw.bin", "pad": ""}
    msg.update(fields)
    msg["pad"] = "x" * (total - len(json.dumps(msg).encode()))
    payload = json.dumps(msg).encode()
    assert len(payload) == total
    return payload


def with_length(field, n, **base):
    value = {"url": "https://h/" + "u" * (n - len("https://h/"))}.get(field, "v" * n)
    msg = {"type": "ota_trigger", "url": "https://fw.example/fw.bin"}
    msg.update(base)
    msg[field] = value
    assert len(value) == n
    return json.dumps(msg).encode()


# (name, payload, expected reason or "ok"): each limit at its bound and one past it.
LIMITS = [
    ("payload_1024", padded_trigger(trigger.MAX_PAYLOAD), "ok"),
    ("payload_1025", padded_trigger(trigger.MAX_PAYLOAD + 1), "too_long"),
    ("url_512", with_length("url", 512), "ok"),
    ("url_513", with_length("url", 513), "bad_url"),
    ("version_31", with_length("version", 31), "ok"),
    ("version_32", with_length("version", 32), "bad_version"),
    ("id_40", with_length("id", trigger.MAX_ID), "ok"),
    ("id_41", with_length("id", trigger.MAX_ID + 1), "bad_job_id"),
    ("signature_256", with_length("signature", 256), "ok"),
    ("signature_257", with_length("signature", 257), "bad_signature_field"),
    ("target_200", with_length("target", 200), "ok"),
    ("target_201", with_length("target", 201), "bad_target"),
    ("version_1", with_length("version", 1), "ok"),
    ("version_empty", with_length("version", 0), "bad_version"),
    ("size_1", json.dumps({"type": "ota_trigger", "url": URL, "size": 1}).encode(), "ok"),
    ("size_0", json.dumps({"type": "ota_trigger", "url": URL, "size": 0}).encode(), "bad_size"),
    ("expires_0", json.dumps({"type": "ota_trigger", "url": URL, "expires": 0}).encode(), "ok"),
    ("expires_minus_1", json.dumps({"type": "ota_trigger", "url": URL, "expires": -1}).encode(), "bad_expires"),
    ("version_space_edge", json.dumps({"type": "ota_trigger", "url": URL, "version": "1.0~"}).encode(), "ok"),
    ("version_del", json.dumps({"type": "ota_trigger", "url": URL, "version": "1.0\x7f"}).encode(), "bad_version"),
]


def outcome(payload):
    try:
        return "ok" if trigger.parse(payload) is not None else None
    except OtaError as e:
        return e.reason


@pytest.mark.parametrize("name,payload,expected", LIMITS, ids=[c[0] for c in LIMITS])
def test_trigger_limits_at_the_bound(name, payload, expected):
    assert outcome(payload) == expected


def test_parse_with_a_smaller_max_len_counts_bytes():
    payload = padded_trigger(300)
    assert outcome(payload) == "ok"
    assert trigger.parse(payload, max_len=300)["url"] == "https://fw.example/fw.bin"
    assert reason_of(trigger.parse, payload, max_len=299) == "too_long"


@pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="no micropython binary")
def test_trigger_limits_same_on_micropython(tmp_path):
    got = parse_on_micropython(tmp_path, LIMITS, timeout=120)
    assert got == {name: expected for name, _, expected in LIMITS}


# ---------------------------------------------------------------- image: chip id, segments, slot size

def test_chip_id_is_the_full_16_bit_field():
    # 0x0105 has the C3's low byte: a check of byte 12 alone would take it for a C3.
    for chip_id in (0x0105, 0x0500, 0xFF05):
        img = fakes.build_image(chip_id=chip_id, payload_size=2000)
        assert reason_of(image.check_header, img[:image.HEADER_BYTES], SLOT) == "wrong_chip"
    assert image.check_header(fakes.build_image(chip_id=5, payload_size=2000), SLOT)["segment_count"] == 2


def three_segments(middle_length, payload=4096):
    # An app image whose middle segment header claims middle_length bytes (data: payload bytes).
    seg0 = fakes.app_descriptor("1.1.0") + fakes.pattern(256, 5)
    head = bytearray(24)
    head[0], head[1], head[2], head[3] = 0xE9, 3, 2, 0x20
    head[8] = 0xEE
    head[12:14] = struct.pack("<H", 5)
    head[23] = 1
    out = bytes(head) + struct.pack("<II", 0x3C000020, len(seg0)) + seg0
    out += struct.pack("<II", 0x42000020, middle_length) + fakes.pattern(payload, 3)
    return out


def test_middle_segment_past_the_slot_is_refused_at_its_header():
    # 3 segments; the second claims to run past the slot. The Verifier must refuse it when its
    # 8-byte header arrives, not at the last segment header (after the bytes were written).
    img = three_segments(SLOT)
    at_header = 24 + 8 + 512 + 8
    v = Verifier(SLOT)
    with pytest.raises(OtaError) as e:
        v.feed(memoryview(img[:at_header]))
    assert e.value.reason == "too_large"
    assert v.image_length is None  # not the last segment: the total is not known yet
    # the longest middle segment that leaves room for the checksum byte and the hash goes on; 4 more
    # bytes (segment lengths are multiples of 4) do not fit
    longest = (SLOT - at_header - 1 - 32) // 4 * 4
    v = Verifier(SLOT)
    v.feed(memoryview(three_segments(longest)[:at_header]))
    with pytest.raises(OtaError) as e:
        Verifier(SLOT).feed(memoryview(three_segments(longest + 4)[:at_header]))
    assert e.value.reason == "too_large"


def test_middle_segment_past_the_slot_is_never_written():
    esp = fakes.make_device(SLOT)
    img = three_segments(SLOT, payload=40000)
    with pytest.raises(OtaError) as e:
        update.run(URL, config=FAST, https=fakes.FakeServer(img), esp32=esp, running="1.0.0", running_project=PROJECT)
    assert e.value.reason == "too_large"
    slot = esp.slots["ota_1"]
    assert slot.bytes_programmed == 0 and slot.set_boot_calls == 0 and esp.boot == "ota_0"


def exact_slot_image():
    # fakes.build_image: 24 + (8 + 512) + (8 + P) bytes, padded to 16 with the checksum, + 32 hash.
    img = fakes.build_image("1.1.0", payload_size=SLOT - 48 - 552)
    assert len(img) == SLOT
    return img


def test_an_image_exactly_the_slot_size_is_accepted():
    img = exact_slot_image()
    v = Verifier(SLOT)
    v.feed(memoryview(img))
    assert v.finish() == SLOT
    result = update.run(URL, size=SLOT, config=FAST, https=fakes.FakeServer(img),
                        esp32=fakes.make_device(SLOT), running="1.0.0", running_project=PROJECT)
    assert (result["result"], result["bytes"]) == ("ok", SLOT)
    # one byte more does not fit: the trigger's size and the stream both say so
    assert reason_of(update.run, URL, size=SLOT + 1, config=FAST, https=fakes.FakeServer(img),
                     esp32=fakes.make_device(SLOT), running="1.0.0", running_project=PROJECT) == "too_large"
    assert reason_of(update.run, URL, config=FAST, https=fakes.FakeServer(img + b"\0"),
                     esp32=fakes.make_device(SLOT), running="1.0.0", running_project=PROJECT) == "too_large"


def test_writer_takes_exactly_the_slot_and_not_a_byte_more():
    small = 0x8000
    esp = fakes.make_device(small)
    data = fakes.pattern(small, 9)
    w = SlotWriter(esp.Partition("ota_1"), bytearray(4096), esp.Partition(esp.Partition.RUNNING).info())
    assert put(w, data) == small and w.finish() == small
    assert bytes(esp.slots["ota_1"].data) == data
    w = SlotWriter(esp.Partition("ota_1"), bytearray(4096), esp.Partition(esp.Partition.RUNNING).info())
    put(w, data[:-1])
    assert reason_of(put, w, b"ab") == "too_large"


# ---------------------------------------------------------------- update: version policy

def test_running_1_1_against_image_1_1_0_is_same_version_not_downgrade():
    esp = fakes.make_device(SLOT)
    result = update.run(URL, config=FAST, https=fakes.FakeServer(fakes.build_image("1.1.0")), esp32=esp,
                        running="1.1", running_project=PROJECT)
    assert result["result"] == "same_version"
    assert esp.slots["ota_1"].total_erases == 0 and esp.boot == "ota_0"


class SwitchingServer(fakes.FakeServer):
    # The file changes on the server after the first connection (a new upload under the same URL).
    def __init__(self, first, then, plans):
        super().__init__(first, plans)
        self.then = then

    def open(self, *args, **kw):
        resp = super().open(*args, **kw)
        self.content = self.then
        return resp


def test_same_version_after_a_200_restart_leaves_no_half_written_slot():
    # 9000 bytes of a newer image are written, the resume gets a 200 with the running version: the
    # slot must not keep the start of the newer image (its sector 0 is erased).
    server = SwitchingServer(fakes.build_image("1.2.0", payload_size=30000), fakes.build_image("1.1.0"),
                             [{"drop_after": 9000}, {"ignore_range": True}])
    esp = fakes.make_device(SLOT)
    result = update.run(URL, config=FAST, https=server, esp32=esp, running="1.1.0", running_project=PROJECT)
    assert result["result"] == "same_version" and [o[1] for o in server.opens] == [0, 9000]
    slot = esp.slots["ota_1"]
    assert slot.bytes_programmed > 0  # the first attempt did write
    assert bytes(slot.data[:4096]) == b"\xff" * 4096 and esp.boot == "ota_0" and slot.set_boot_calls == 0


# ---------------------------------------------------------------- the job store

def test_seen_list_stays_bounded_on_disk(tmp_path):
    path = str(tmp_path / "ota_job.json")
    store = jobs.Jobs(path)
    for i in range(jobs.MAX_SEEN * 3):
        store.start({"id": "job-%d" % i, "type": "ota_trigger"}, "ok")
    with open(path) as f:
        on_disk = json.load(f)["seen"]  # the file itself, loaded whole at boot
    newest = ["job-%d" % i for i in range(jobs.MAX_SEEN * 2, jobs.MAX_SEEN * 3)]
    assert on_disk == newest and store.seen == newest
    again = jobs.Jobs(path)
    assert not again.seen_before("job-%d" % (jobs.MAX_SEEN * 2 - 1)) and again.seen_before(newest[0])
    # a file written by something else with too many ids is cut to the newest at load
    with open(path, "w") as f:
        json.dump({"current": None, "seen": ["old-%d" % i for i in range(40)]}, f)
    assert jobs.Jobs(path).seen == ["old-%d" % i for i in range(40 - jobs.MAX_SEEN, 40)]


# ---------------------------------------------------------------- the health gate

class MarkCounter:
    def __init__(self):
        self.marks = 0
        counter = self

        class Partition:
            @staticmethod
            def mark_app_valid_cancel_rollback():
                counter.marks += 1

        self.Partition = Partition


@pytest.mark.parametrize("selftest", [lambda cfg: (False, "sensor missing"), lambda cfg: 1 / 0])
def test_failed_selftest_never_marks_the_slot_valid(selftest):
    esp = MarkCounter()
    state, reason, detail = health.confirm(selftest, {}, esp)
    assert (state, reason) == ("failed", "selftest_failed") and detail
    assert esp.marks == 0
    assert health.confirm(lambda cfg: (True, None), {}, esp) == ("ok", None, None) and esp.marks == 1


# ---------------------------------------------------------------- signed triggers: expiry bound

NOW = 1767225600
KEY = signing.generate_key()
KEYS = [bytes.fromhex(signing.public_key_hex(KEY))]
BASE = {"type": "ota_trigger", "url": "https://fw.example.com/app-1.2.0.bin", "sha256": "ab" * 32,
        "version": "1.2.0", "id": "job-77"}


def device_check(message, now):
    parsed = trigger.parse(json.dumps(message).encode())
    return signature.check(parsed, {"require_signature": True}, "a0b1c2d3e4f5", now, FreshStore(), KEYS)


class FreshStore:  # a replay store that has accepted nothing (lib/ota/replay.py's interface)
    def highest(self, key):
        return 0

    def accept(self, key, seq):
        pass


def test_longest_validity_otactl_allows_is_accepted_by_the_device():
    message = signing.sign_trigger(BASE, KEY, expires_in=signing.MAX_EXPIRES_IN, now=NOW)
    assert message["expires"] == NOW + signature.MAX_VALIDITY_S
    assert device_check(message, NOW) is True  # expires == now + MAX_VALIDITY_S
    assert reason_of(device_check, message, NOW - 1) == "expires_too_far"
    with pytest.raises(HostError) as e:
        signing.sign_trigger(BASE, KEY, expires_in=signing.MAX_EXPIRES_IN + 1, now=NOW)
    assert e.value.reason == "bad_expires"


def test_a_trigger_expires_at_its_second():
    message = signing.sign_trigger(BASE, KEY, expires_in=60, now=NOW)
    assert device_check(message, NOW + 59) is True
    assert reason_of(device_check, message, NOW + 60) == "expired"


# ---------------------------------------------------------------- otadata: which entry wins

def test_otadata_tie_sector_0_wins():
    # Both sectors name ota_0 with the same seq (the bootloader rewrote the state in one of them):
    # sector 0 wins, as in bootloader_common_get_active_otadata.
    esp = fakes.make_device(SLOT, otadata=True)
    assert fakes.otadata_after(esp, (3, "VALID"), (3, "ABORTED")) == {"ota_0": "VALID", "ota_1": None}
    assert fakes.otadata_after(esp, (3, "ABORTED"), (3, "VALID")) == {"ota_0": "ABORTED", "ota_1": None}


def test_otadata_larger_seq_wins_in_either_sector():
    esp = fakes.make_device(SLOT, otadata=True)
    # seq 1 and 3 both name ota_0
    assert fakes.otadata_after(esp, (1, "ABORTED"), (3, "VALID")) == {"ota_0": "VALID", "ota_1": None}
    assert fakes.otadata_after(esp, (3, "VALID"), (1, "ABORTED")) == {"ota_0": "VALID", "ota_1": None}


def test_clock_is_set_from_clock_valid_after_on():
    start = signature.CLOCK_VALID_AFTER
    message = signing.sign_trigger(BASE, KEY, expires_in=60, now=start)
    assert device_check(message, start) is True
    assert reason_of(device_check, message, start - 1) == "clock_not_set"
