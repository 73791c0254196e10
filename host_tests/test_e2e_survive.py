# A device stays on the fleet (issue 10, "device survives"): no message, server answer, image or hang
# takes the agent off the broker for good. Each case runs the real micropython binary on the simulated
# ESP32-C3 against a real mosquitto and our HTTPS dev server, and is judged from the broker's side
# (the retained state) and the flash (otadata, boots.jsonl).
import os

import pytest

from harness import simfleet
from harness.broker import find_backend
from harness.devserver import DevServer
from harness.nginx import find_nginx
from test_e2e_agent import BIG, Rig, _is_ok

pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                reason="needs mosquitto (or amqtt) and nginx")

SLOW_RATE = 600 * 1024  # bytes/s: the 1.7 MB image takes about 2.8 s


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1", size=BIG)}
    with simfleet.lab(tmp_path_factory.mktemp("survive"), images) as world:
        pki = world["pki"]
        fast = DevServer(world["www"], pki.server_cert, pki.server_key)
        slow = DevServer(world["www"], pki.server_cert, pki.server_key)
        slow.faults.trickle = SLOW_RATE
        hostile = DevServer(world["www"], pki.server_cert, pki.server_key)  # faults set per test
        with fast, slow, hostile:
            yield dict(world, fast=fast, slow=slow, hostile=hostile)


@pytest.fixture
def rigs(world):
    made = []

    def make(name, unique_id, **ota):
        rig = Rig(world, name, unique_id, ota=ota or None)
        made.append(rig)
        return rig

    yield make
    world["hostile"].reset()
    for rig in made:
        rig.close()


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
