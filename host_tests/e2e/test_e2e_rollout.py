# The operator's tools end to end: `otactl release`, `otactl rollout`, `otactl status` and `otactl
# revert` run as the operator runs them (the installed console script, a subprocess) against real
# mosquitto, real nginx over TLS and a fleet of 6 simulated ESP32-C3s, each the real micropython
# binary running this checkout's main.py -> ota.agent with its own unique_id (so its own
# /switch/state/<id> topic), its own flash and its own config.
#
# The three tests share one fleet and run in file order, as an operator's week would:
#   1. 1.0.0 -> 1.0.1 in two stages, at most 2 devices at once: every device confirms 1.0.1.
#   2. 1.0.2 fails its self-test: the first stage's devices roll back by themselves, the failure
#      rate aborts the rollout, the second stage is never triggered, nothing is left to revert.
#   3. a good 1.0.3, but one device of the second stage cannot verify the server (its ca.der is
#      another CA's): the rollout aborts in stage 2 after stage 1 took 1.0.3; `otactl revert` sends
#      the devices that took it back to 1.0.1, the image still in their other slot, without a single
#      download; the devices the rollout never reached stay untouched.
import json
import os
import subprocess
import time

import pytest

from devkit import simfleet
from devkit.broker import Watcher, find_backend
from devkit.nginx import find_nginx
from fleet_helpers import max_in_flight, read_log
from otactl import rollout, signing

from paths import ROOT as REPO
OTACTL = os.path.join(REPO, ".venv", "bin", "otactl")
DEVICE_IDS = ["c3f1ee7000%02x" % i for i in range(1, 7)]
HEALTH_TIMEOUT_S = 10
pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None or not os.path.exists(OTACTL),
                                reason="needs mosquitto, nginx and the otactl console script")


def otactl(world, *argv, timeout=60):
    # The operator's path: the console script, the broker from the environment (otactl/mqtt.py).
    env = dict(os.environ, OTACTL_BROKER=world["broker"].host, OTACTL_PORT=str(world["broker"].port))
    started = time.monotonic()
    done = subprocess.run([OTACTL] + [str(a) for a in argv], capture_output=True, text=True, env=env,
                          cwd=str(world["root"]), timeout=timeout)
    done.elapsed = time.monotonic() - started
    print("$ otactl %s  (exit %d, %.1f s)\n%s%s" % (" ".join(map(str, argv)), done.returncode, done.elapsed,
                                                   done.stdout, done.stderr))
    return done


def downloads(world):
    # nginx's access log: one line per firmware request, whoever made it.
    with open(os.path.join(world["web"].tmp, "access.log")) as f:
        return [line for line in f if "GET /firmware-" in line]


def status(world):
    done = otactl(world, "status", "--json", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    return {d["id"]: d for d in map(json.loads, done.stdout.splitlines())}


def wait_settled(world, predicate, timeout=30):
    # Until every device's latest state satisfies predicate(device_id, message).
    watch = world["watch"]
    deadline = time.monotonic() + timeout
    while True:
        latest = {}
        for m in list(watch.messages):
            latest[m.topic.rsplit("/", 1)[1]] = m
        if all(d in latest and predicate(d, latest[d]) for d in DEVICE_IDS):
            return latest
        if time.monotonic() > deadline:
            raise TimeoutError({d: latest.get(d) for d in DEVICE_IDS})
        time.sleep(0.1)


def reboot(world, device_id, timeout=60):
    # Power-cycles one device and waits until it has said its state again (not its last will).
    watch, device = world["watch"], world["devices"][device_id]
    mark = len(watch.messages)
    device.stop()
    device.start()
    deadline = time.monotonic() + timeout
    while not any(m.topic.endswith("/" + device_id) and m.state != "offline" for m in list(watch.messages)[mark:]):
        if time.monotonic() > deadline:
            raise TimeoutError("%s did not come back:\n%s" % (device_id, device.console()[-2000:]))
        time.sleep(0.1)


def release(world, version, **image_options):
    image = os.path.join(world["root"], "build-%s.bin" % version)
    with open(image, "wb") as f:
        f.write(simfleet.firmware(version, **image_options))
    done = otactl(world, "release", image, "--dir", world["www"], "--base-url", world["web"].url())
    assert done.returncode == 0, done.stderr
    manifest = os.path.join(world["www"], "firmware-v%s.json" % version)
    with open(manifest) as f:
        assert json.load(f)["url"] == world["web"].url("firmware-v%s.bin" % version)
    return manifest


def busy_peak(messages, job):
    # From the devices' own reports: how many were between their first state of `job` and their
    # final one at the same time.
    spans = {}
    for m in messages:
        if m.get("job") != job:
            continue
        device = m.topic.rsplit("/", 1)[1]
        start, end = spans.get(device, (m.t, None))
        spans[device] = (start, m.t if m.state in ("ok", "rolled_back", "failed") and end is None else end)
    edges = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values() if e is not None])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak, spans


def on_slot(device, label, versions):
    # The flash agrees: the bootloader picks `label` from otadata, confirmed (VALID), and the boots
    # ran exactly `versions`.
    otadata = device.read_otadata()
    assert otadata["slot"] == label, otadata
    assert otadata["entries"][otadata["active"]]["state_name"] == "VALID", otadata
    assert [b["version"] for b in device.boots()] == versions, device.boots()
    assert "Traceback" not in device.console(), device.console()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    factory = simfleet.firmware("1.0.0")
    with simfleet.lab(tmp_path_factory.mktemp("rollout"), {}) as lab:
        # The operator's signing key: the devices trust it but do not require signatures; a revert
        # to an older version needs it (signed, with allow_downgrade).
        key = signing.generate_key()
        key_path = os.path.join(lab["root"], "signing.pem")
        with open(key_path, "wb") as f:
            f.write(signing.private_key_pem(key))
        broker = lab["broker"]
        watch = Watcher(broker.host, broker.port)
        devices = {}
        try:
            for device_id in DEVICE_IDS:
                devices[device_id] = simfleet.new_device(
                    os.path.join(lab["root"], device_id), factory, broker.host, broker.port,
                    ca_der=lab["pki"].ca_der, unique_id=device_id,
                    ota={"health_timeout_s": HEALTH_TIMEOUT_S, "signing_pubkey": signing.public_key_hex(key)})
            for device in devices.values():  # all at once: six micropython processes
                device.start()
            world = dict(lab, watch=watch, devices=devices, key_path=key_path)
            wait_settled(world, lambda d, m: m.state == "idle" and m.get("version") == "1.0.0", timeout=60)
            yield world
        finally:
            for device in devices.values():
                device.stop()
            watch.close()


def test_staged_rollout_updates_the_whole_fleet(world, tmp_path):
    manifest = release(world, "1.0.1")
    log = str(tmp_path / "rollout-1.0.1.jsonl")
    job = "job-101"
    done = otactl(world, "rollout", "--manifest", manifest, "--stages", "0.34,1", "--max-concurrent", 2,
                  "--device-timeout", 60, "--job", job, "--log", log, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "%s: completed 1.0.1, 6 targets" % job in done.stdout
    assert "outcomes: ok 6" in done.stdout and "not started: 0; stages advanced 2 of 2" in done.stdout

    # The log: start, a trigger and an outcome for every device exactly once, both stages advanced.
    records = read_log(log)
    events = [r["event"] for r in records]
    assert events[0] == "start" and events[-1] == "done"
    assert sorted(records[0]["targets"]) == DEVICE_IDS and records[0]["stages"] == [[0, 3], [3, 6]]
    triggers = [r["device"] for r in records if r["event"] == "trigger"]
    outcomes = {r["device"]: r for r in records if r["event"] == "outcome"}
    assert sorted(triggers) == DEVICE_IDS and len(outcomes) == 6 and events.count("outcome") == 6
    assert {(r["outcome"], r["version"]) for r in outcomes.values()} == {("ok", "1.0.1")}
    stages = [(r["stage"], r["decision"], r["devices"]) for r in records if r["event"] == "stage"]
    assert stages == [(0, "advance", 3), (1, "advance", 3)]
    # Stage 2 starts only once stage 1 is decided; its devices are the second half of the order.
    assert events.index("stage") < min(i for i, r in enumerate(records)
                                       if r["event"] == "trigger" and r["stage"] == 1)
    assert [r["device"] for r in records if r["event"] == "trigger" and r["stage"] == 1] == \
        rollout._order(job, DEVICE_IDS)[3:]
    # At most 2 at once: by the log, and by the devices' own state messages.
    assert max_in_flight(records) == 2
    peak, spans = busy_peak(world["watch"].messages, job)
    assert peak <= 2 and sorted(spans) == DEVICE_IDS and all(end is not None for _, end in spans.values())

    # The broker's retained states (as `otactl status` reads them) and every device's flash.
    states = status(world)
    assert sorted(states) == DEVICE_IDS
    for device_id, fields in states.items():
        assert (fields["state"], fields["version"], fields["slot"], fields["job"]) == \
            ("ok", "1.0.1", "ota_1", job), fields
        on_slot(world["devices"][device_id], "ota_1", ["1.0.0", "1.0.1"])
    assert len(downloads(world)) == 6
    print("rollout of 1.0.1 over 6 devices: %.1f s" % done.elapsed)


def test_bad_release_aborts_at_the_threshold(world, tmp_path):
    before = {d: len(dev.boots()) for d, dev in world["devices"].items()}
    assert all(m.get("version") == "1.0.1" for m in status(world).values()), "needs the fleet on 1.0.1"
    manifest = release(world, "1.0.2", failing_selftest=True)
    log = str(tmp_path / "rollout-1.0.2.jsonl")
    job = "job-102-bad"
    done = otactl(world, "rollout", "--manifest", manifest, "--stages", "0.34,1", "--max-concurrent", 2,
                  "--device-timeout", 60, "--abort-failure-rate", 0.2, "--job", job, "--log", log,
                  timeout=120)
    assert done.returncode == 1
    assert "otactl: rollout_aborted: failure_rate" in done.stderr
    assert "%s: aborted 1.0.2, 6 targets" % job in done.stdout
    assert "outcomes: rolled_back 2" in done.stdout and "not started: 4; stages advanced 0 of 2" in done.stdout

    records = read_log(log)
    order = rollout._order(job, DEVICE_IDS)
    first = order[:2]  # max-concurrent 2: the first failure stops the third trigger of stage 1
    assert [r["device"] for r in records if r["event"] == "trigger"] == first
    outcomes = {r["device"]: r for r in records if r["event"] == "outcome"}
    assert sorted(outcomes) == sorted(first)
    for record in outcomes.values():
        assert record["outcome"] == "rolled_back" and record["version"] == "1.0.1"
        assert record["reason"] in ("selftest_failed", "health_timeout"), record
    abort = [r for r in records if r["event"] == "abort"]
    assert [(a["stage"], a["reason"]) for a in abort] == [(0, "failure_rate")]
    assert records[-1]["event"] == "done" and records[-1]["summary"]["not_started"] == 4
    assert not any(r["event"] == "trigger" and r["stage"] == 1 for r in records)

    # The bad image booted once on each of the two and they went back by themselves; the rest never
    # heard of 1.0.2.
    states = status(world)
    for device_id, device in world["devices"].items():
        fields = states[device_id]
        assert fields["version"] == "1.0.1" and fields["slot"] == "ota_1", fields
        if device_id in first:
            assert (fields["state"], fields["job"]) == ("rolled_back", job), fields
            assert [b["version"] for b in device.boots()[before[device_id]:]] == ["1.0.2", "1.0.1"]
            otadata = device.read_otadata()
            assert otadata["slot"] == "ota_1"
            assert otadata["entries"][otadata["active"]]["state_name"] == "VALID", otadata
        else:
            assert fields["state"] == "ok" and fields["job"] == "job-101", fields
            assert len(device.boots()) == before[device_id]
    # Nothing took 1.0.2: nothing to revert.
    done = otactl(world, "revert", "--log", log, "--timeout", 30)
    assert done.returncode == 1 and "otactl: nothing_to_revert" in done.stderr


def test_abort_mid_rollout_then_revert_without_download(world, tmp_path):
    manifest = release(world, "1.0.3")
    log = str(tmp_path / "rollout-1.0.3.jsonl")
    job = "job-103"
    order = rollout._order(job, DEVICE_IDS)
    stage1, broken, rest = order[:3], order[3], order[4:]
    # A misprovisioned device: its ca.der is another CA's, so the download fails tls_verify_failed.
    # (The agent makes the update's TLS context from the CA file once per boot, after its first
    # connect (lib/ota/workspace.py): the device is rebooted with the wrong file, and again with the
    # right one afterwards. MQTT here is plain, so it stays connected.)
    broken_device = world["devices"][broken]
    good_ca = broken_device.read_fs("ca.der")
    with open(world["pki"].other_ca_der, "rb") as f:
        broken_device.write_fs("ca.der", f.read())
    reboot(world, broken)
    boots = {d: len(dev.boots()) for d, dev in world["devices"].items()}
    try:
        done = otactl(world, "rollout", "--manifest", manifest, "--stages", "0.5,1", "--max-concurrent", 2,
                      "--device-timeout", 60, "--abort-failure-rate", 0.2, "--job", job, "--log", log,
                      timeout=120)
    finally:
        broken_device.write_fs("ca.der", good_ca)
    reboot(world, broken)
    boots[broken] = len(broken_device.boots())
    assert done.returncode == 1 and "otactl: rollout_aborted: failure_rate" in done.stderr
    records = read_log(log)
    outcomes = {r["device"]: r for r in records if r["event"] == "outcome"}
    decisions = [(s["stage"], s["decision"]) for s in records if s["event"] == "stage"]
    assert decisions == [(0, "advance"), (1, "abort")]
    assert all(outcomes[d]["outcome"] == "ok" and outcomes[d]["version"] == "1.0.3" for d in stage1)
    assert (outcomes[broken]["outcome"], outcomes[broken]["reason"]) == ("failed", "tls_verify_failed")
    # Triggered together with the broken one (max-concurrent 2), order[4] is followed to its outcome
    # after the abort; order[5] is never triggered.
    triggered = [r["device"] for r in records if r["event"] == "trigger"]
    assert triggered == stage1 + [broken, rest[0]] and outcomes[rest[0]]["outcome"] == "ok"
    untouched = rest[1:]
    assert "not started: %d; stages advanced 1 of 2" % len(untouched) in done.stdout
    took = stage1 + [rest[0]]
    states = status(world)
    for device_id in took:
        assert (states[device_id]["state"], states[device_id]["version"], states[device_id]["slot"]) == \
            ("ok", "1.0.3", "ota_0")
    assert (states[broken]["state"], states[broken]["reason"], states[broken]["version"]) == \
        ("failed", "tls_verify_failed", "1.0.1")

    # Revert: going back from 1.0.3 to 1.0.1 is a downgrade. Unsigned, the devices refuse it (nothing
    # reboots) and otactl says what they need.
    requests = len(downloads(world))
    done = otactl(world, "revert", "--log", log, "--timeout", 60, timeout=120)
    assert done.returncode == 1 and "otactl: revert_failed" in done.stderr, done.stdout + done.stderr
    assert "4 devices refused with downgrade" in done.stdout and "--allow-downgrade" in done.stdout
    assert all(len(world["devices"][d].boots()) == boots[d] + 1 for d in took)
    # Signed with allow_downgrade: the devices that took 1.0.3 boot the other slot again (1.0.1),
    # pass the health gate and confirm it. No firmware is downloaded.
    done = otactl(world, "revert", "--log", log, "--timeout", 60, "--sign-key", world["key_path"],
                  "--allow-downgrade", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reverted 4 of 4 devices" in done.stdout
    assert "skip %-24s runs_1.0.1" % broken in done.stdout
    assert len(downloads(world)) == requests
    records = read_log(log)
    reverts = {r["device"]: r for r in records if r["event"] == "revert_outcome"}
    assert sorted(reverts) == sorted(took)
    assert {(r["outcome"], r["version_before"], r["version"]) for r in reverts.values()} == \
        {("ok", "1.0.3", "1.0.1")}
    assert records[-1]["event"] == "revert_done" and records[-1]["outcomes"] == {"ok": 4}

    revert_job = records[-1]["job"]
    states = status(world)
    for device_id, device in world["devices"].items():
        fields = states[device_id]
        assert (fields["version"], fields["slot"]) == ("1.0.1", "ota_1"), fields
        new_boots = [b["version"] for b in device.boots()[boots[device_id]:]]
        if device_id in took:
            assert (fields["state"], fields["job"]) == ("ok", revert_job), fields
            assert new_boots == ["1.0.3", "1.0.1"]
            # 1.0.1 came back through the health gate, like a fresh update: confirmed, not assumed.
            said = [m.state for m in world["watch"].messages
                    if m.topic.endswith("/" + device_id) and m.get("job") == revert_job]
            assert said[-3:] == ["rebooting", "confirming", "ok"], said
            otadata = device.read_otadata()
            assert otadata["slot"] == "ota_1"
            assert otadata["entries"][otadata["active"]]["state_name"] == "VALID", otadata
        else:  # the broken device and the one never reached: not a single reboot
            assert new_boots == [], (device_id, new_boots)
        assert "Traceback" not in device.console(), device.console()
