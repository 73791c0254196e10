# The device agent's must-show scenarios, end to end: the real micropython binary runs this
# checkout's main.py -> ota.agent on the simulated ESP32-C3, against a real mosquitto, real nginx and
# our HTTPS dev server (which records every request and can trickle). Each outcome is checked from the
# broker's side (the retained state messages) and from the flash (otadata, boots.jsonl), and downloads
# are counted on the server side.
#
# One device per test (its own unique_id, so its own state and command topics); triggers go to the
# device topic so nothing one test publishes reaches another test's device. Every request a test makes
# carries "?t=<test>" so the dev server's request log can be counted per test.
import hashlib
import os
import re
import time

import pytest

from devkit import simfleet
from devkit.broker import Watcher, find_backend
from devkit.devserver import DevServer
from devkit.nginx import find_nginx

pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                reason="needs mosquitto (or amqtt) and nginx")

BIG = 1713728  # the official MicroPython v1.24.1 C3 app size (docs/CHIP.md §3)
SLOW_RATE = 600 * 1024  # bytes/s: the 1.7 MB image takes about 2.8 s


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1", size=BIG)}
    with simfleet.lab(tmp_path_factory.mktemp("agent"), images) as world:
        pki = world["pki"]
        fast = DevServer(world["www"], pki.server_cert, pki.server_key)
        slow = DevServer(world["www"], pki.server_cert, pki.server_key)
        slow.faults.trickle = SLOW_RATE
        with fast, slow:
            yield dict(world, fast=fast, slow=slow)


class Rig:
    """One simulated device plus a watcher on its state topic."""

    def __init__(self, world, name, unique_id, ota=None):
        self.world = world
        self.name = name
        self.device_id = unique_id
        self.state_topic = "/switch/state/" + unique_id
        self.cmd_topic = "/switch/cmd/" + unique_id
        broker = world["broker"]
        self.device = simfleet.new_device(os.path.join(world["root"], name), world["images"]["1.0.0"],
                                          broker.host, broker.port, ca_der=world["pki"].ca_der,
                                          unique_id=unique_id, ota=ota)
        self.watch = Watcher(broker.host, broker.port, topics=(self.state_topic,))
        self.retained = False

    def start(self):
        self.device.start()
        return self.wait_for(lambda m: m.state == "idle", timeout=30)

    def url(self, server, version="1.0.1"):
        return self.world[server].url("firmware-%s.bin?t=%s" % (version, self.name))

    def trigger(self, job_id, server="fast", version="1.0.1", **extra):
        message = {"type": "ota_trigger", "url": self.url(server, version), "id": job_id,
                   "sha256": hashlib.sha256(self.world["images"][version]).hexdigest()}
        message.update(extra)
        return message

    def send(self, payload, retain=False):
        self.retained = self.retained or retain
        mark = len(self.watch.messages)
        self.watch.publish(self.cmd_topic, payload, retain=retain)
        return mark

    def mark(self):
        return len(self.watch.messages)

    def states(self, start=0):
        return [m for m in self.watch.messages[start:] if m.topic == self.state_topic]

    def wait_for(self, predicate, timeout=30, start=0):
        try:
            return self.watch.wait_for(lambda m: m.topic == self.state_topic and predicate(m), timeout, start)
        except TimeoutError as e:
            raise TimeoutError("%s\n%s" % (e, self.why())) from None

    def requests(self, server="fast"):
        # The dev server's requests made by this test's device.
        return [r for r in self.world[server].requests if r["path"].endswith("t=" + self.name)]

    def versions_booted(self):
        return [b.get("version") for b in self.device.boots()]

    def why(self):
        # For assertion messages: what the flash and the console say.
        return "boots=%s\nconsole tail:\n%s" % (self.device.boots(), self.device.console()[-2500:])

    def close(self):
        self.device.stop()
        if self.retained:  # a retained trigger must not outlive the test
            self.watch.publish(self.cmd_topic, b"", retain=True)
        self.watch.close()


class Rigs(list):
    # rigs(name, unique_id, **ota) -> a new Rig on the world's broker and servers, kept for close().
    def __init__(self, world):
        super().__init__()
        self.world = world

    def __call__(self, name, unique_id, **ota):
        self.append(Rig(self.world, name, unique_id, ota=ota or None))
        return self[-1]

    def close(self):
        for rig in self:
            rig.close()


@pytest.fixture
def rigs(world):
    made = Rigs(world)
    yield made
    made.close()
    for rig in made:
        assert "Traceback" not in rig.device.console(), rig.device.console()[-3000:]


def _is_ok(version, job):
    return lambda m: m.state == "ok" and m.get("version") == version and m.get("job") == job


# --- 1. bad payload matrix ---------------------------------------------------------------------------
URL = "https://localhost:1/fw.bin"
SHA = "ab" * 32
BAD_PAYLOADS = [
    # (what, payload, reason the state topic shows; None: ignored, no state message at all)
    ("not JSON", b"ON", "bad_json"),
    ("JSON array", b'[{"type": "ota_trigger", "url": "%s"}]' % URL.encode(), "not_object"),
    ("another app's type", {"type": "switch_toggle", "url": URL}, None),
    ("no type at all", {"hello": 1}, None),
    ("missing url", {"type": "ota_trigger", "id": "m1"}, "missing_url"),
    ("ftp://", {"type": "ota_trigger", "url": "ftp://localhost/fw.bin"}, "bad_url"),
    ("10 KB", b'{"type": "ota_trigger", "url": "%s", "pad": "%s"}' % (URL.encode(), b"x" * 10240),
     "too_long"),
    ("sha256 not hex", {"type": "ota_trigger", "url": URL, "sha256": "zz" * 32}, "bad_sha256_field"),
    ("sha256 short", {"type": "ota_trigger", "url": URL, "sha256": "abc"}, "bad_sha256_field"),
    ("negative size", {"type": "ota_trigger", "url": URL, "size": -5}, "bad_size"),
    ("size as string", {"type": "ota_trigger", "url": URL, "size": "1713728"}, "bad_size"),
    ("size as bool", {"type": "ota_trigger", "url": URL, "size": True}, "bad_size"),
    ("raw bytes, not UTF-8", b'{"type":"ota_trigger","url":"https://x/\xff\xfe"}', "bad_json"),
    ("binary junk", b"\x00\x01\xfe\xff\xc3(", "bad_json"),
    ("unicode host", {"type": "ota_trigger", "url": "https://b\u00fccher.example/fw.bin"}, "bad_url"),
    ("unicode version", {"type": "ota_trigger", "url": URL, "version": "1.0.1\u2603"}, "bad_version"),
    ("emoji job id", {"type": "ota_trigger", "url": URL, "id": "job-\U0001F680"}, "bad_job_id"),
    ("lone surrogate", b'{"type":"ota_trigger","url":"%s","version":"\\ud800"}' % URL.encode(),
     "bad_version"),
]


def test_bad_payload_matrix_then_valid_update(world, rigs):
    rig = rigs("bad", "e2e00000b001")
    rig.start()
    mark = rig.mark()
    ignored = []
    for what, payload, reason in BAD_PAYLOADS:
        rig.send(payload)
        if reason is None:
            ignored.append(what)
            continue
        # The NEXT state message is this payload's answer: an ignored payload before it said nothing.
        got = rig.wait_for(lambda m: True, timeout=10, start=mark)
        assert (what, got.state, got.get("reason")) == (what, "failed", reason), got
        assert got.get("job") is None and got.get("version") == "1.0.0", got
        if what == "ftp://":
            assert "ftp" in got.get("detail"), got
        mark = rig.mark()
    assert ignored == ["another app's type", "no type at all"]
    assert rig.device.result is None and len(rig.device.boots()) == 1  # no crash, no reset
    assert rig.requests() == []

    # A well-formed but wrong sha256 downloads, fails at the end, and changes nothing.
    before = rig.device.read_otadata()
    wrong = rig.trigger("job-badsha", sha256="00" * 32)
    rig.send(wrong)
    failed = rig.wait_for(lambda m: m.state == "failed" and m.get("job") == "job-badsha", timeout=30)
    assert failed.get("reason") == "bad_sha256" and failed.get("version") == "1.0.0", failed
    assert rig.device.read_otadata() == before and before["slot"] in (None, "ota_0")  # boot slot kept
    assert len(rig.device.boots()) == 1

    # The next valid trigger still works.
    mark = rig.send(rig.trigger("job-good"))
    ok = rig.wait_for(_is_ok("1.0.1", "job-good"), timeout=60, start=mark)
    assert ok.get("slot") == "ota_1"
    assert rig.versions_booted() == ["1.0.0", "1.0.1"]
    assert len(rig.requests()) == 2  # the bad_sha256 download and the good one


# --- 2. duplicate trigger ----------------------------------------------------------------------------
def test_duplicate_and_retained_trigger_runs_once(world, rigs):
    rig = rigs("dup", "e2e00000d002")
    rig.start()
    job = rig.trigger("job-dup", server="slow")
    rig.send(job, retain=True)  # the broker hands it out again at every subscribe
    rig.wait_for(lambda m: m.state == "downloading" and m.get("job") == "job-dup", timeout=10)
    rig.send(job)  # a redelivery while the job runs
    ok = rig.wait_for(_is_ok("1.0.1", "job-dup"), timeout=60)
    # After the reboot the new image subscribed and got the retained trigger: give it time to act.
    _wait_line(rig.device, r"duplicate job ignored: job-dup", _wait_line(rig.device, r"booting ota_1", 0),
               timeout=10)
    time.sleep(1.5)
    assert len(rig.requests("slow")) == 1, rig.requests("slow")
    assert rig.versions_booted() == ["1.0.0", "1.0.1"]
    assert rig.device.console().count("duplicate job ignored: job-dup") == 2
    after = rig.states(rig.watch.messages.index(ok) + 1)
    assert [m.state for m in after] == [], after  # no second download, no second reboot
    assert rig.device.read_otadata()["slot"] == "ota_1"


# --- 3. trigger while busy ---------------------------------------------------------------------------
def test_trigger_while_busy_is_refused_first_completes(world, rigs):
    rig = rigs("busy", "e2e00000b003", progress_interval_s=1)
    rig.start()
    rig.send(rig.trigger("job-first", server="slow"))
    rig.wait_for(lambda m: m.state == "downloading" and (m.get("progress") or 0) > 0, timeout=10)
    mark = rig.send(rig.trigger("job-second", server="fast"))
    busy = rig.wait_for(lambda m: m.get("reason") == "busy", timeout=10, start=mark)
    # The running job's state stays, with the refusal added.
    assert busy.state in ("downloading", "verifying") and busy.get("job") == "job-first", busy
    assert "job-second" in busy.get("detail"), busy
    ok = rig.wait_for(_is_ok("1.0.1", "job-first"), timeout=60)
    assert ok.get("reason") is None
    assert len(rig.requests("slow")) == 1 and rig.requests("fast") == []  # job-second never ran
    assert rig.versions_booted() == ["1.0.0", "1.0.1"]


# --- 4. broker restarted mid-update ------------------------------------------------------------------
def test_broker_restart_mid_download(world, rigs):
    broker = world["broker"]
    rig = rigs("restart", "e2e00000a004", progress_interval_s=1)
    rig.start()
    rig.send(rig.trigger("job-restart", server="slow"))
    rig.wait_for(lambda m: m.state == "downloading" and (m.get("progress") or 0) > 0, timeout=10)
    broker.restart(down_s=1.0)
    # The retained state died with the broker; the new image publishes its outcome after connecting.
    ok = rig.wait_for(_is_ok("1.0.1", "job-restart"), timeout=60)
    assert ok.get("slot") == "ota_1"
    assert len(rig.requests("slow")) == 1  # the download went on: no second request, no resume
    assert rig.versions_booted() == ["1.0.0", "1.0.1"]
    assert "MQTT lost during the download" in rig.device.console()
    otadata = rig.device.read_otadata()
    assert otadata["slot"] == "ota_1" and otadata["entries"][otadata["active"]]["state_name"] == "VALID"


# --- 5. power cut mid-download -----------------------------------------------------------------------
def test_power_cut_mid_download_reports_interrupted(world, rigs):
    rig = rigs("cut", "e2e00000c005")
    rig.device.set_fault(cut_after_bytes=600000, boot=1)  # flash programming dies part-way
    rig.start()
    rig.send(rig.trigger("job-cut"))
    failed = rig.wait_for(lambda m: m.state == "failed" and m.get("job") == "job-cut", timeout=30)
    assert failed.get("reason") == "interrupted" and failed.get("version") == "1.0.0", failed
    assert failed.get("slot") == "ota_0"
    boots = rig.device.boots()
    assert [(b["slot"], b["exit"]) for b in boots[:1]] == [("ota_0", "power_cut")], boots
    assert [b["version"] for b in boots] == ["1.0.0", "1.0.0"]
    assert rig.device.read_otadata()["slot"] in (None, "ota_0")  # the old firmware stays the boot slot
    assert rig.device.faults() == []
    # A new job (new id) succeeds from scratch.
    mark = rig.send(rig.trigger("job-after-cut"))
    rig.wait_for(_is_ok("1.0.1", "job-after-cut"), timeout=60, start=mark)
    assert rig.versions_booted() == ["1.0.0", "1.0.0", "1.0.1"]
    assert len(rig.requests()) == 2
    assert rig.device.read_otadata()["slot"] == "ota_1"


# --- 6. ota_revert -----------------------------------------------------------------------------------
def test_revert_no_image_then_update_then_revert(world, rigs):
    from otactl import signing

    key = signing.generate_key()  # trusted, not required: only the downgrade needs it
    rig = rigs("revert", "e2e00000e006", signing_pubkey=signing.public_key_hex(key))
    rig.start()
    # A fresh device: ota_1 was never written.
    mark = rig.send({"type": "ota_revert", "id": "r0"})
    failed = rig.wait_for(lambda m: m.get("job") == "r0", timeout=10, start=mark)
    assert (failed.state, failed.get("reason")) == ("failed", "revert_no_image"), failed
    assert "ota_1" in failed.get("detail")
    assert len(rig.device.boots()) == 1
    mark = rig.send(rig.trigger("job-up"))
    rig.wait_for(_is_ok("1.0.1", "job-up"), timeout=60, start=mark)
    downloads = len(rig.requests())
    # Back to 1.0.0 is a downgrade: an unsigned revert is refused like an unsigned update to 1.0.0
    # would be (its allow_downgrade ignored), and nothing reboots.
    mark = rig.send({"type": "ota_revert", "id": "r1", "allow_downgrade": True})
    refused = rig.wait_for(lambda m: m.get("job") == "r1", timeout=10, start=mark)
    assert (refused.state, refused.get("reason")) == ("failed", "downgrade"), refused
    assert len(rig.device.boots()) == 2
    # The operator's signed revert with allow_downgrade goes through.
    mark = rig.send(signing.sign_trigger({"type": "ota_revert", "id": "r2"}, key, allow_downgrade=True,
                                         target=rig.device_id))
    ok = rig.wait_for(_is_ok("1.0.0", "r2"), timeout=60, start=mark)
    assert ok.get("slot") == "ota_0"
    states = [m.state for m in rig.states(mark)]
    assert states.index("rebooting") < states.index("confirming") < states.index("ok"), states
    assert "downloading" not in states
    assert len(rig.requests()) == downloads == 1  # a revert downloads nothing
    assert rig.versions_booted() == ["1.0.0", "1.0.1", "1.0.0"]
    otadata = rig.device.read_otadata()
    assert otadata["slot"] == "ota_0" and otadata["entries"][otadata["active"]]["state_name"] == "VALID"


# --- 7. health gate timeout --------------------------------------------------------------------------
def test_health_gate_timeout_rolls_back(world, rigs):
    broker = world["broker"]
    rig = rigs("gate", "e2e00000a007", health_timeout_s=5)
    rig.start()
    rig.send(rig.trigger("job-gate"))
    rig.wait_for(lambda m: m.state == "rebooting" and m.get("job") == "job-gate", timeout=30)
    broker.stop()  # the new image will find no broker
    stopped = time.monotonic()
    try:
        first = _wait_line(rig.device, r"booting ota_1", 0)
        back = _wait_line(rig.device, r"booting ota_0", first + 1, timeout=20)
        down_s = time.monotonic() - stopped
    finally:
        broker.start()
    rolled = rig.wait_for(lambda m: m.state == "rolled_back", timeout=30)
    assert rolled.get("job") == "job-gate" and rolled.get("reason") == "health_timeout", rolled
    assert (rolled.get("version"), rolled.get("slot")) == ("1.0.0", "ota_0"), rolled
    assert down_s > 5
    assert back > first
    boots = rig.device.boots()
    assert [b["version"] for b in boots] == ["1.0.0", "1.0.1", "1.0.0"]
    assert boots[1]["exit"] == "reset"  # the gate reset the new image; the bootloader did the rest
    otadata = rig.device.read_otadata()
    assert otadata["slot"] != "ota_1"
    assert "ABORTED" in [e["state_name"] for e in otadata["entries"]], otadata
    # The rolled-back image never confirmed the new one on the way.
    assert "health: rolling back: health_timeout" in rig.device.console()


def _wait_line(device, pattern, start, timeout=30):
    # Index of the first console line from `start` that matches `pattern`.
    line = device.wait_for(lambda text: text if re.search(pattern, text) else None, timeout, start)
    lines = device.lines()
    return next(i for i in range(start, len(lines)) if lines[i] is line)


# --- 8. power cut while confirming -------------------------------------------------------------------
def test_power_cut_at_mark_valid_ends_on_a_valid_image(world, rigs):
    rig = rigs("confirm", "e2e00000f008")
    rig.device.set_fault(point="mark_valid", boot=2)  # the new image's first boot, inside the gate
    rig.start()
    mark = rig.send(rig.trigger("job-confirm"))
    final = rig.wait_for(lambda m: m.get("job") == "job-confirm" and m.state in ("ok", "rolled_back"),
                         timeout=60, start=mark)
    boots = rig.device.boots()
    assert len(boots) == 3 and boots[1]["version"] == "1.0.1", rig.why()
    assert boots[1]["exit"] == "power_cut", rig.why()
    last = boots[-1]
    assert rig.device.result is None  # running, on an image it can boot
    # Consistent: the report names the image that is running, and the flash agrees.
    assert (final.get("version"), final.get("slot")) == (last["version"], last["slot"]), (final, last)
    otadata = rig.device.read_otadata()
    assert (otadata["slot"] or "ota_0") == last["slot"], otadata
    if final.state == "ok":
        assert last["version"] == "1.0.1"
        assert otadata["entries"][otadata["active"]]["state_name"] == "VALID"
    else:  # the cut came before the VALID write: PENDING_VERIFY became ABORTED, the old slot boots
        assert final.state == "rolled_back" and last["version"] == "1.0.0", final
        assert final.get("reason") == "boot_failed", final
        assert "ABORTED" in [e["state_name"] for e in otadata["entries"]], otadata
