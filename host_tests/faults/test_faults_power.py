# Power cuts at every step of an update (the fault-injection matrix, issue "trust and resilience").
#
# Each case is one fresh simulated device running the real agent (main.py -> ota.agent) on the real
# micropython binary, talking to a real mosquitto and downloading a 1.7 MB image from real nginx over
# verified TLS. A power cut is armed in the device's faults.json (sim/device/simdev.py: it fires once
# and is consumed), or made from the host at a moment the device reports. Then, for every cut:
#   - every boot booted a valid image (a slot and a version; never 'no_app'): bricked devices == 0;
#   - the device reports a consistent state: the terminal state of the interrupted job is one the cut
#     allows (failed/interrupted, rolled_back, or ok if the update had in fact completed), and the
#     retained state's version and slot are those of the image it booted; otadata agrees;
#   - a following update (a new trigger id, a newer version) succeeds, and the boot slot then holds
#     exactly the new image's bytes, confirmed VALID.
# Short form (`make test`): about 10 cuts. Full form (OTA_FAULTS=full, `make faults`): 60+ cuts over
# download (cut_after_bytes at many offsets, mid-sector too), write (slot_erase, erase, program counts),
# verify, set_boot, the otadata write, the first boot of the new image and the confirmation.
# One broker and one nginx per module, images built once, 3 devices at a time.
import hashlib
import os
import random
import time

import pytest

from devkit import faultmatrix, simfleet
from devkit.broker import Watcher, find_backend
from devkit.nginx import find_nginx

pytest_plugins = ["devkit.faultmatrix"]
pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                reason="needs mosquitto (or amqtt) and nginx")

BIG = 1713728  # the official MicroPython v1.24.1 C3 app (docs/CHIP.md §3)
SECTOR = 4096
SECTORS = (BIG + SECTOR - 1) // SECTOR  # 419 slot sectors, each erased and programmed once (writer.py)
# What the first boot's flash operations are, in order (sim/device/simbootloader.py, esp32.py):
#   bootloader on blank otadata: erase #1 + program #1 (a 32-byte entry: seq 1, VALID, ota_0)
#   the download: slot sector i = slot_erase #i = erase #(i+1), program #(i+1) (4 KiB each; the last,
#   0xFF-padded, in finish() after the download: the verify step)
#   set_boot: otadata erase #2 + program of the 32-byte NEW entry (erase #SECTORS+2, program #SECTORS+2)
# The new image's first boot: bootloader NEW -> PENDING_VERIFY (otadata erase #1, 32 bytes), the
# 'boot' point, then the health gate's mark_valid (point, otadata erase #2, 32 bytes).
ENTRY = 32
SLOT_BYTES = SECTORS * SECTOR
WORKERS = 3
SEED = 20240611  # random download offsets: printed, so a failure can be replayed
TIMEOUT = 120  # per wait; a healthy case takes a few seconds

# The terminal state of the cut job -> allowed? Per cut class.
INTERRUPTED = {("failed", "interrupted")}
ROLLED_BACK = {("rolled_back", "boot_failed")}
CONFIRMED = {("ok", None)}


def _cases():
    """[(group, name, faults, allowed, host_cut)]; full or short form."""
    rng = random.Random(SEED)
    full = faultmatrix.FULL
    cases = []

    def add(group, name, faults, allowed, host_cut=None):
        cases.append((group, name, faults, allowed, host_cut))

    if full:  # the bootloader's own first write (before any job): the trigger then simply works
        add("power: bootloader first boot", "otadata_erase #1, boot 1", {"point": "otadata_erase", "boot": 1},
            CONFIRMED)
        add("power: bootloader first boot", "cut_after_bytes=16, boot 1", {"cut_after_bytes": 16, "boot": 1},
            CONFIRMED)
    # Download: slot offsets at sector edges, mid-sector, mid-1 KiB chunk, and seeded random ones.
    fixed = [1, 1000, 4095, 4096, 4097, 6000, 65536 + 123, 262144, 409600 + 2048, 1048576, 1500001,
             SLOT_BYTES - SECTOR - 1] if full else [4097, 1048576 + 2048]
    randoms = sorted(rng.randrange(1, SLOT_BYTES - SECTOR) for _ in range(14 if full else 1))
    for k in fixed + randoms:
        add("power: download (cut_after_bytes)", "slot byte %d" % k,
            {"cut_after_bytes": ENTRY + k, "boot": 1}, INTERRUPTED)
    # Write: the n-th slot sector erase / the n-th erase or program of this boot.
    for n in ([1, 2, 64, 200, SECTORS - 1] if full else [2]):
        add("power: write (slot_erase)", "slot_erase #%d" % n, {"point": "slot_erase", "count": n, "boot": 1},
            INTERRUPTED)
    for n in ([2, 150, 300] if full else []):
        add("power: write (erase)", "erase #%d" % n, {"point": "erase", "count": n, "boot": 1}, INTERRUPTED)
    for n in ([2, 100, 333, SECTORS] if full else [100]):
        add("power: write (program)", "program #%d" % n, {"point": "program", "count": n, "boot": 1},
            INTERRUPTED)
    # Verify: the last (0xFF-padded) block goes out in finish(), then the read-back and set_boot's own
    # image check; a host cut when the device says "verifying" lands in the hash / read-back / set_boot.
    add("power: verify", "program #%d (last block, finish)" % (SECTORS + 1),
        {"point": "program", "count": SECTORS + 1, "boot": 1}, INTERRUPTED)
    if full:
        add("power: verify", "slot byte %d (last block)" % (SLOT_BYTES - 100),
            {"cut_after_bytes": ENTRY + SLOT_BYTES - 100, "boot": 1}, INTERRUPTED)
        add("power: verify", "host cut at 'verifying'", [], INTERRUPTED | CONFIRMED | ROLLED_BACK,
            host_cut="verifying")
    # set_boot: before the otadata is touched; after the entry is written (the reset has not happened).
    add("power: set_boot", "set_boot", {"point": "set_boot", "boot": 1}, INTERRUPTED)
    add("power: set_boot", "set_boot_done", {"point": "set_boot_done", "boot": 1}, CONFIRMED)
    if full:
        add("power: set_boot", "erase #%d (otadata, by count)" % (SECTORS + 2),
            {"point": "erase", "count": SECTORS + 2, "boot": 1}, INTERRUPTED)
    # The otadata write: sector erased / entry not yet or half programmed.
    add("power: otadata write", "otadata_erase #2", {"point": "otadata_erase", "count": 2, "boot": 1},
        INTERRUPTED)
    if full:
        add("power: otadata write", "otadata_write #2", {"point": "otadata_write", "count": 2, "boot": 1},
            INTERRUPTED)
        add("power: otadata write", "program #%d" % (SECTORS + 2),
            {"point": "program", "count": SECTORS + 2, "boot": 1}, INTERRUPTED)
        for k in (0, 4, 16, 24, 31):
            add("power: otadata write", "entry byte %d" % k,
                {"cut_after_bytes": ENTRY + SLOT_BYTES + k, "boot": 1}, INTERRUPTED)
    # The first boot of the new image (PENDING_VERIFY): the bootloader must roll back at the next boot.
    add("power: first boot of new image", "boot point, boot 2", {"point": "boot", "boot": 2}, ROLLED_BACK)
    if full:
        add("power: first boot of new image", "bootloader otadata_erase (NEW -> PENDING_VERIFY), boot 2",
            {"point": "otadata_erase", "boot": 2}, ROLLED_BACK)
        add("power: first boot of new image", "bootloader entry byte 16, boot 2",
            {"cut_after_bytes": 16, "boot": 2}, ROLLED_BACK)
        # The first flash operation or point after t ms: for a small t that can be the bootloader's
        # first erase, before it touched the NEW entry; the next boot is then the image's real first
        # boot, and it confirms (ok). Later: rolled back.
        for ms in (1, 50, 150, 400):
            add("power: first boot of new image", "cut_after_ms=%d, boot 2" % ms,
                {"cut_after_ms": ms, "boot": 2}, ROLLED_BACK | CONFIRMED)
        # The record still says "downloading" (the cut came before "rebooting" was written), but otadata
        # shows the new slot ABORTED by the bootloader (it was not before the job: ota.otadata,
        # health.classify): the old firmware reports rolled_back/boot_failed, not interrupted.
        add("power: first boot of new image", "set_boot_done (boot 1), then boot point (boot 2)",
            [{"point": "set_boot_done", "boot": 1}, {"point": "boot", "boot": 2}], ROLLED_BACK)
    # The confirmation: mark_app_valid_cancel_rollback rewrites the active otadata entry as VALID.
    add("power: confirmation", "mark_valid, boot 2", {"point": "mark_valid", "boot": 2}, ROLLED_BACK)
    if full:
        add("power: confirmation", "otadata_erase #2, boot 2", {"point": "otadata_erase", "count": 2, "boot": 2},
            ROLLED_BACK)
        add("power: confirmation", "otadata_write #2, boot 2", {"point": "otadata_write", "count": 2, "boot": 2},
            ROLLED_BACK)
        add("power: confirmation", "entry byte 16, boot 2", {"cut_after_bytes": ENTRY + 16, "boot": 2},
            ROLLED_BACK)
    return cases


CASES, GROUPS = faultmatrix.select(_cases())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1", size=BIG),
              "1.0.2": simfleet.firmware("1.0.2", size=BIG - 4096)}
    faultmatrix.note("power cuts: seed %d (download offsets), %d cases, image %d bytes (%d sectors)"
                     % (SEED, len(CASES), BIG, SECTORS))
    with simfleet.lab(tmp_path_factory.mktemp("faults-power"), images) as world:
        watch = Watcher(world["broker"].host, world["broker"].port)
        try:
            yield dict(world, watch=watch)
        finally:
            watch.close()


def _trigger(world, version, job):
    blob = world["images"][version]
    return {"type": "ota_trigger", "url": world["web"].url("firmware-%s.bin" % version),
            "sha256": hashlib.sha256(blob).hexdigest(), "version": version, "id": job}


class Case:
    def __init__(self, world, index, group, name, faults, allowed, host_cut):
        self.world, self.group, self.name = world, group, name
        self.faults, self.allowed, self.host_cut = faults, allowed, host_cut
        self.uid = "fa%010x" % (index + 1)
        self.topic = "/switch/state/" + self.uid
        self.device = None
        self.problems = []
        self.retained = None

    def wait(self, predicate, timeout=TIMEOUT, start=0):
        watch = self.world["watch"]
        return watch.wait_for(lambda m: m.topic == self.topic and predicate(m), timeout=timeout, start=start)

    def check(self, condition, text):
        if not condition:
            self.problems.append(text)

    def run(self):
        world = self.world
        broker = world["broker"]
        self.device = simfleet.new_device(os.path.join(world["root"], self.uid), world["images"]["1.0.0"], broker.host,
                                          broker.port, ca_der=world["pki"].ca_der, unique_id=self.uid)
        if self.faults:
            self.device.set_fault(self.faults)
        cmd = "/switch/cmd/" + self.uid
        self.device.start()
        try:
            self.wait(lambda m: m.state == "idle", timeout=60)
            mark = len(world["watch"].messages)
            job_a, job_b = "cut-" + self.uid, "next-" + self.uid
            world["watch"].publish(cmd, _trigger(world, "1.0.1", job_a))
            if self.host_cut:
                at, delay = self.host_cut if isinstance(self.host_cut, tuple) else (self.host_cut, 0)
                self.wait(lambda m: m.state == at and m.get("job") == job_a, start=mark)
                time.sleep(delay)
                self.device.power_cut()
            terminal = self.wait(lambda m: m.get("job") == job_a and m.state in ("ok", "failed", "rolled_back"),
                                 start=mark)
            booted = self.device.boots()[-1]  # the boot that published it
            otadata = self.device.read_otadata()
            self.outcome = (terminal.state, terminal.get("reason"))
            self.check(self.outcome in self.allowed, "job %s ended %s, allowed %s" % (job_a, self.outcome,
                                                                                      sorted(self.allowed, key=str)))
            self.check((terminal.get("version"), terminal.get("slot")) == (booted.get("version"), booted.get("slot")),
                       "state says %s on %s, booted %s" % (terminal.get("version"), terminal.get("slot"), booted))
            self.check((otadata["slot"] or "ota_0") == booted.get("slot"),
                       "otadata selects %s, booted %s" % (otadata["slot"], booted.get("slot")))
            # A following update, with a new job id, goes through.
            mark = len(world["watch"].messages)
            world["watch"].publish(cmd, _trigger(world, "1.0.2", job_b))
            done = self.wait(lambda m: m.get("job") == job_b and m.state in ("ok", "failed", "rolled_back"),
                             start=mark)
            self.check(done.state == "ok" and done.get("version") == "1.0.2",
                       "follow-up update ended %s %s %s" % (done.state, done.get("reason"), done.get("detail")))
            self.retained = _retained(world, self.topic)  # before stop(): that fires the last will
        finally:
            self.device.stop()
        self.final_checks()
        return self

    def final_checks(self):
        device = self.device
        boots = device.boots()
        # Bricked: the bootloader found nothing bootable, or booted a slot without a valid app. A cut
        # inside the bootloader step (a boot line with stage "bootloader", exit power_cut) is not.
        self.bricked = device.result == "no_app" or any(
            b.get("exit") == "no_app" or (b.get("slot") is not None and not b.get("version")) for b in boots)
        self.check(not self.bricked, "a boot without a valid image: %s" % boots)
        self.check(all(b.get("exit") in ("reset", "power_cut") for b in boots),
                   "a boot ended otherwise than by a reset or a cut: %s" % [b.get("exit") for b in boots])
        self.check(not device.faults(), "the armed cut never fired: %s" % device.faults())
        # (boots.jsonl, not counters.json: see the report on simflash.save_counters losing records)
        cuts = sum(1 for b in boots[:-1] if b.get("exit") == "power_cut")  # the last one: stop()
        self.check(cuts >= 1, "no power cut happened")
        otadata = device.read_otadata()
        last = boots[-1]
        active = otadata["entries"][otadata["active"]] if otadata["active"] is not None else None
        self.check(active is not None and active["state_name"] == "VALID" and otadata["slot"] == last["slot"],
                   "final otadata %s, last boot %s" % (otadata, last))
        image = self.world["images"]["1.0.2"]
        slot = device.partition(last["slot"])
        self.check(device.read_flash(slot.offset, len(image)) == image, "boot slot does not hold 1.0.2 exactly")
        retained = self.retained
        self.check(retained is not None and retained.state == "ok" and
                   (retained.get("version"), retained.get("slot")) == (last["version"], last["slot"]) == ("1.0.2", last["slot"]),
                   "retained state %r, last boot %s" % (retained, last))
        self.check("Traceback" not in device.console(), "Traceback on the console")


def _retained(world, topic):
    broker = world["broker"]
    watch = Watcher(broker.host, broker.port, topics=(topic,))
    try:
        return watch.wait_for(lambda m: m.retain, timeout=5)
    except TimeoutError:
        return None
    finally:
        watch.close()


def _run(world, index, case):
    started = time.monotonic()
    c = Case(world, index, *case)
    c.outcome, c.bricked = None, False
    try:
        c.run()
    except Exception as e:  # a timeout or a crash of the harness: the row says so, the test fails
        c.problems.append("%s: %s" % (type(e).__name__, e))
        if c.device is not None and c.device.result == "no_app":
            c.bricked = True
    state, reason = c.outcome or ("error", None)
    faultmatrix.record(c.group, c.name, faultmatrix.outcome_of(state), reason=reason, bricked=c.bricked, allowed=not c.problems,
                       seconds=time.monotonic() - started, detail="; ".join(c.problems)[:400] or None)
    return c


@pytest.fixture(scope="module")
def results(world):
    # Every case of the module on one pool (WORKERS devices at a time): {group: [Case, ...]}.
    return faultmatrix.run_grouped(CASES, lambda i, case: _run(world, i, case), WORKERS, lambda c: c.group)


@pytest.mark.parametrize("group", GROUPS)
def test_faults_power_cut(results, group):
    done = results[group]
    bricked = [c.name for c in done if c.bricked]
    assert not bricked, "bricked: %s" % bricked
    bad = ["%s: %s\n  console tail: %s" % (c.name, "; ".join(c.problems),
                                           c.device.console()[-1500:] if c.device else "")
           for c in done if c.problems]
    assert not bad, "\n".join(bad)
