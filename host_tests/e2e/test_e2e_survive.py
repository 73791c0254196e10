# A device stays on the fleet (issue 10, "device survives"): no message, server answer, image or hang
# takes the agent off the broker for good. Each case runs the real micropython binary on the simulated
# ESP32-C3 against a real mosquitto and our HTTPS dev server, and is judged from the broker's side
# (the retained state) and the flash (otadata, boots.jsonl).
import time

import pytest

from devkit import simfleet
from devkit.broker import find_backend
from devkit.devserver import DevServer
from devkit.faultproxy import FaultProxy
from devkit.nginx import find_nginx
from test_e2e_agent import BIG, Rigs, _is_ok

pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                reason="needs mosquitto (or amqtt) and nginx")

SLOW_RATE = 600 * 1024  # bytes/s: the 1.7 MB image takes about 2.8 s
# Short enough for a test, long enough for the config's rule (> connect + 2 * read timeout).
WATCHDOG = {"watchdog_ms": 10000, "connect_timeout": 2, "read_timeout": 3, "health_timeout_s": 30}

# Releases that break after the update (code appended to ota/agent.py of an otherwise good image).
BROKEN = {
    "raises-at-import": b"\nraise RuntimeError('broken at import')\n",
    "raises-later": b"""
def _broken(self):
    raise ValueError('broken in the health gate')
Agent._confirm = _broken
""",
    # A blocking socket call without a timeout, before the health gate decides.
    "hangs": b"""
def _hang(self):
    import socket
    s = socket.socket()
    s.bind(socket.getaddrinfo('127.0.0.1', 0)[0][-1])
    s.listen(1)
    print('agent: hanging in accept()')
    s.accept()
Agent._confirm = _hang
""",
}
# A release that confirms, then hangs (busy loop) when it is sent b"hang".
HANG_ON_COMMAND = b"""
_on_message = Agent.on_message
def _maybe_hang(self, topic, payload):
    if payload == b'hang':
        print('agent: hanging')
        while True:
            pass
    _on_message(self, topic, payload)
Agent.on_message = _maybe_hang
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1", size=BIG)}
    for name, code in BROKEN.items():
        images[name] = simfleet.firmware("1.0.2", append={"ota/agent.py": code})
    images["hang-on-command"] = simfleet.firmware("1.0.1", append={"ota/agent.py": HANG_ON_COMMAND})
    with simfleet.lab(tmp_path_factory.mktemp("survive"), images) as world:
        pki = world["pki"]
        fast = DevServer(world["www"], pki.server_cert, pki.server_key)
        slow = DevServer(world["www"], pki.server_cert, pki.server_key)
        slow.faults.trickle = SLOW_RATE
        hostile = DevServer(world["www"], pki.server_cert, pki.server_key)  # faults set per test
        with fast, slow, hostile, FaultProxy(("127.0.0.1", hostile.port)) as proxy:
            yield dict(world, fast=fast, slow=slow, hostile=hostile, proxy=proxy)


@pytest.fixture
def rigs(world):
    made = Rigs(world)
    yield made
    world["hostile"].reset()
    world["proxy"].pass_through()
    made.close()


def _alive(rig):
    # The device process never left main.py and never sat at a REPL: no crash, no offline will.
    assert rig.device.result is None, rig.why()
    assert "Traceback" not in rig.device.console(), rig.why()
    assert not [m for m in rig.states() if m.state == "offline"], rig.why()


# --- 1. a signed trigger without an id, while a job runs ---------------------------------------------
def test_signed_trigger_without_id_while_busy_is_refused_busy(world, rigs):
    # It used to raise TypeError ("refused " + None) in intake.py: the agent died mid-download.
    rig = rigs("noid", "e2e50000a001", progress_interval_s=1)
    rig.start()
    rig.send(rig.trigger("job-first", server="slow"))
    rig.wait_for(lambda m: m.state == "downloading" and (m.get("progress") or 0) > 0, timeout=10)
    mark = rig.send({"type": "ota_trigger", "url": rig.url("fast"), "signature": "00" * 64})
    busy = rig.wait_for(lambda m: m.get("reason") == "busy", timeout=10, start=mark)
    assert busy.state in ("downloading", "verifying") and busy.get("job") == "job-first", busy
    rig.wait_for(_is_ok("1.0.1", "job-first"), timeout=60)
    _alive(rig)
    assert rig.requests("fast") == []  # the refused trigger never ran


def _slot_unbootable(rig, label="ota_1"):
    part = rig.device.partition(label)
    return rig.device.read_flash(part.offset, 4096) == b"\xff" * 4096


# --- 2. bytes that are not UTF-8 in a header name, a Location, a chunked trailer ----------------------
def test_non_utf8_header_location_trailer_are_bad_response(world, rigs):
    # Each used to raise UnicodeError out of http_response.py through the whole stack: the agent died
    # and the half-written slot stayed as it was.
    hostile = world["hostile"]
    rig = rigs("utf8", "e2e50000a002")
    rig.start()
    cases = (
        ("header name", lambda: hostile.faults.headers.update({"X-\xff": "1"}), "firmware-1.0.1.bin"),
        ("Location", lambda: hostile.redirects.update({"/moved": (302, "{origin}/\xfe\xff")}), "moved"),
        ("trailer", lambda: setattr(hostile.faults, "chunked", True) or setattr(
            hostile.faults, "trailer", b"X-\xff: \xfe\r\n"), "firmware-1.0.1.bin"),
    )
    for n, (what, arm, path) in enumerate(cases):
        hostile.reset()
        arm()
        job = rig.trigger("job-%d" % n)
        job["url"] = hostile.url("%s?t=%s" % (path, rig.name))
        mark = rig.send(job)
        failed = rig.wait_for(lambda m: m.get("job") == job["id"] and m.state == "failed", timeout=30,
                              start=mark)
        assert failed.get("reason") == "bad_response", (what, failed)
        assert rig.device.read_otadata()["slot"] in (None, "ota_0"), what  # boot slot untouched
        assert _slot_unbootable(rig), what
        _alive(rig)
    assert len(rig.device.boots()) == 1
    hostile.reset()
    mark = rig.send(rig.trigger("job-good"))
    rig.wait_for(_is_ok("1.0.1", "job-good"), timeout=60, start=mark)
    assert rig.versions_booted() == ["1.0.0", "1.0.1"]


# --- 3. a new image that raises at import, raises later, or hangs: rolled back, reported -------------
@pytest.mark.parametrize("release,exit,detail", [
    ("raises-at-import", "reset", "reset itself before it confirmed"),
    ("raises-later", "reset", "crashed: ValueError: broken in the health gate"),
    ("hangs", "wdt", "hung: the watchdog reset it"),
])
def test_broken_new_image_is_rolled_back_and_reported(world, rigs, release, exit, detail):
    rig = rigs(release, "e2e5000003%02d" % len(release), **WATCHDOG)
    rig.start()
    mark = rig.send(rig.trigger("job-" + release, version=release))
    rig.wait_for(lambda m: m.state == "rebooting", timeout=30, start=mark)
    rebooting = time.monotonic()
    # Within the health timeout plus the watchdog's (and the two boots around them).
    deadline = WATCHDOG["health_timeout_s"] + WATCHDOG["watchdog_ms"] / 1000 + 30
    rolled = rig.wait_for(lambda m: m.state == "rolled_back", timeout=deadline, start=mark)
    print("%s: rolled back and reported %.1f s after 'rebooting'" % (release, time.monotonic() - rebooting))
    assert (rolled.get("job"), rolled.get("reason")) == ("job-" + release, "boot_failed"), rolled
    assert detail in rolled.get("detail"), rolled
    assert (rolled.get("version"), rolled.get("slot")) == ("1.0.0", "ota_0"), rolled
    boots = rig.device.boots()
    assert [(b["version"], b.get("exit")) for b in boots[:2]] == [("1.0.0", "reset"), ("1.0.2", exit)], boots
    assert boots[2]["version"] == "1.0.0" and rig.device.result is None, rig.why()
    assert "ABORTED" in [e["state_name"] for e in rig.device.read_otadata()["entries"]]
    assert rig.device.read_otadata()["slot"] != "ota_1"
    if release == "hangs":
        assert boots[2]["reset_cause"] == "WDT_RESET", boots


# --- 4. the confirmed firmware hangs: the watchdog resets it, back on the fleet ----------------------
def test_confirmed_firmware_that_hangs_is_reset_by_the_watchdog(world, rigs):
    rig = rigs("hang-ok", "e2e50000a004", **WATCHDOG)
    rig.start()
    mark = rig.send(rig.trigger("job-up", version="hang-on-command"))
    rig.wait_for(_is_ok("1.0.1", "job-up"), timeout=60, start=mark)
    mark = rig.send(b"hang")
    rig.wait_for(lambda m: m.state == "offline", timeout=30, start=mark)  # its last will
    back = rig.wait_for(lambda m: m.state == "ok", timeout=30, start=mark)
    assert (back.get("version"), back.get("slot")) == ("1.0.1", "ota_1"), back
    boots = rig.device.boots()
    assert [(b["version"], b["reset_cause"]) for b in boots] == [
        ("1.0.0", "PWRON_RESET"), ("1.0.1", "HARD_RESET"), ("1.0.1", "WDT_RESET")], boots
    assert boots[1]["exit"] == "wdt" and rig.device.result is None
    assert "agent: hanging" in rig.device.console()


def _via_proxy(world, rig, job):
    job["url"] = world["proxy"].url("firmware-1.0.1.bin?t=" + rig.name)
    return job


# --- 5. a server that restarts the download for ever, or trickles -------------------------------------
def test_200_to_every_range_request_is_bounded(world, rigs):
    # Each connection is cut a little later than the last and every Range request is answered 200:
    # each "progress" used to reset the retry budget, and each restart erased sector 0 again.
    world["hostile"].faults.ignore_range = True
    world["proxy"].sequence(*[{"kind": "drop", "n": 200000 + 100000 * k} for k in range(10)])
    before = len(world["proxy"].connections)
    rig = rigs("restarts", "e2e50000a005", retry_backoff_ms=100)  # ota.max_restarts: 3 by default
    rig.start()
    mark = rig.send(_via_proxy(world, rig, rig.trigger("job-restarts")))
    failed = rig.wait_for(lambda m: m.get("job") == "job-restarts" and m.state == "failed", timeout=60,
                          start=mark)
    assert failed.get("reason") == "too_many_restarts", failed
    assert len(world["proxy"].connections) - before == 5  # the first answer, 3 restarts, the refused one
    assert rig.device.read_otadata()["slot"] in (None, "ota_0") and _slot_unbootable(rig)
    world["hostile"].reset()
    mark = rig.send(rig.trigger("job-good"))
    rig.wait_for(_is_ok("1.0.1", "job-good"), timeout=60, start=mark)
    first_boot = rig.device.boot_counters(0)
    print("ota_1 sector 0 erased %d times in the first boot" % first_boot["erased_sectors"]["0x1e0000"])
    assert first_boot["erased_sectors"]["0x1e0000"] <= 4 + 1 + 1, first_boot  # 4 starts, invalidate, good job
    _alive(rig)


def test_download_deadline_ends_a_trickling_server(world, rigs):
    # 20 KB/s: each 4 KiB chunk comes well within the watchdog's timeout, the whole image would take
    # 85 s; the job's deadline ends it, cleanly, and the watchdog never fires.
    world["proxy"].trickle(20000)
    rig = rigs("trickle", "e2e50000a006", download_deadline_s=12, **WATCHDOG)
    rig.start()
    mark = rig.send(_via_proxy(world, rig, rig.trigger("job-trickle")))
    failed = rig.wait_for(lambda m: m.get("job") == "job-trickle" and m.state == "failed", timeout=60,
                          start=mark)
    assert failed.get("reason") == "download_deadline", failed
    assert rig.device.read_otadata()["slot"] in (None, "ota_0") and _slot_unbootable(rig)
    assert len(rig.device.boots()) == 1  # no watchdog reset on the way
    _alive(rig)
