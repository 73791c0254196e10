# The operator's tool trusts no device (issue 17): ids that collide with topics, hostile retained
# states, device text on the terminal. Each test reproduces one finding against a real mosquitto.
import json
import math

import pytest

from fleet_helpers import (ACL, FAST, MANIFEST, broker_args, broker_module, lose_live_ok, needs_broker,
                           read_log, run_cli)
from otactl import devstate, mqtt, rollout
from ota.errors import OtaError
from otactl.fleet import Fleet
from sim.lightdevice import Behavior, LightFleet


def state(device_id, version="1.0.0", state="idle", **extra):
    fields = {"id": device_id, "version": version, "slot": "ota_0", "state": state, "progress": None,
              "bytes": None, "total": None, "job": None, "reason": None, "detail": None, "heap": 150000,
              "uptime_s": 5, "ts": None}
    fields.update(extra)
    return json.dumps(fields).encode()


# Payloads a broken or hostile device can leave retained on its own state topic.
HOSTILE = {
    "h-int-version": state("h-int-version").replace(b'"1.0.0"', b"5"),
    "h-list-version": state("h-list-version").replace(b'"1.0.0"', b"[1, 0]"),
    "h-long-version": state("h-long-version", "1." + "9" * 5000),
    "h-super-version": state("h-super-version", "1.\u00b2"),
    "h-list-state": b"[1, 2, 3]",
    "h-huge-progress": state("h-huge-progress", state="downloading").replace(b'"progress": null',
                                                                             b'"progress": 1e400'),
    "h-nan-ts": state("h-nan-ts").replace(b'"ts": null', b'"ts": NaN'),
    # an int too big for a float: math.isfinite raised OverflowError in paho's thread (review)
    "h-huge-heap": state("h-huge-heap").replace(b'"heap": 150000', b'"heap": ' + b"9" * 400),
    "h-markup": state("h-markup", "1.0.0", "failed", reason="[/]", detail="[bold red]ALL DEVICES OK[/]"),
    "h-escape": state("h-escape", "\x1b[2J\x1b[HALL DEVICES OK", "failed", reason="x\x1b]0;pwned\x07",
                      detail="\r\x1b[2KALL DEVICES OK"),
    "h-bidi": state("h-bidi", "1.0.0\u202e", "idle"),
    "h-other-id": state("dev-00"),  # claims another device's id
    "h-not-json": b"\xff\xfe{",
    "h-deep": b"[" * 100000,
    "h-big": state("h-big", detail="x" * 5000),
    "h-unknown-state": state("h-unknown", state="\x1b[31mpwned"),
}


def seed(broker, payloads):
    w = broker_module.Watcher(broker.host, broker.port, topics=())
    for device_id, payload in payloads.items():
        w.publish("/switch/state/" + device_id, payload, retain=True)
    w.close()


@pytest.mark.parametrize("device_id", ["root", "+", "#", "a/b", "", "x" * 33, "a\x1b[2J", "a b"])
def test_ids_that_collide_with_topics_are_refused(device_id):
    with pytest.raises(OtaError) as e:
        mqtt.cmd_topic(device_id)
    assert e.value.reason == "bad_device_id"
    fleet = Fleet()
    assert fleet.update("/switch/state/" + device_id, state(device_id)) is None
    assert not fleet.devices
    if "/" not in device_id:  # else not a state topic at all
        assert list(fleet.rejected.values())[0].startswith("bad_device_id")


def test_hostile_states_are_refused_at_one_place():
    fleet = Fleet()
    for device_id, payload in HOSTILE.items():
        fleet.update("/switch/state/" + device_id, payload)
    fleet.update("/switch/state/dev-00", state("dev-00"))
    accepted = set(fleet.devices)  # well-formed, if odd: shown escaped, never a target
    assert accepted == {"dev-00", "h-super-version", "h-markup", "h-escape", "h-bidi"}
    assert math.isfinite(fleet.devices["dev-00"].last_seen)
    for device_id in set(HOSTILE) - accepted:
        assert fleet.rejected[device_id].split(":")[0] == "bad_state", device_id


def test_target_selection_never_raises_on_a_hostile_version():
    fleet = Fleet()
    for device_id, payload in HOSTILE.items():
        fleet.update("/switch/state/" + device_id, payload)
    fleet.update("/switch/state/dev-00", state("dev-00"))
    targets, skipped = fleet.targets("1.0.1")
    assert targets == ["dev-00", "h-markup"]
    assert skipped == {"h-super-version": "bad_version", "h-escape": "bad_version", "h-bidi": "bad_version"}


def test_show_escapes_what_a_terminal_would_act_on():
    assert devstate.show("\x1b[2J\rok\u202e\\") == "\\x1b[2J\\rok\\u202e\\\\"
    assert devstate.show("1.0.1 [/] \u00b2") == "1.0.1 [/] \u00b2"


@needs_broker
def test_status_survives_hostile_states_and_shows_them_escaped(broker, capsys):
    seed(broker, dict(HOSTILE, **{"dev-00": state("dev-00", "1.0.1", "ok")}))
    assert run_cli(["status"] + broker_args(broker)) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\x07" not in out
    assert "dev-00" in out and "\\x1b[2J" in out  # shown, escaped
    assert "[/]" in out  # markup shown as text, not interpreted
    assert "refused: " in out
    assert run_cli(["status", "--json"] + broker_args(broker)) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {d["id"] for d in lines if "refused" in d} >= {"h-list-state", "h-not-json", "h-deep"}


@needs_broker
def test_trigger_and_revert_refuse_a_device_id_of_root(broker, manifest_file, capsys):
    seed(broker, {"root": state("root")})
    watch = broker_module.Watcher(broker.host, broker.port, topics=("/switch/cmd/#",))
    for argv in (["trigger", "--manifest", manifest_file, "--device", "root", "--force"],
                 ["revert", "--device", "root", "--force"],
                 ["trigger", "--manifest", manifest_file, "--device", "dev+1"]):
        assert run_cli(argv + broker_args(broker)) == 1
        assert capsys.readouterr().err.startswith("otactl: bad_device_id: ")
    seed(broker, {"probe": b""})
    watch.publish("/switch/cmd/marker", b"end")
    msg = watch.wait_for(lambda m: True, timeout=5)
    assert msg.topic == "/switch/cmd/marker"  # nothing reached a command topic before it
    watch.close()


@needs_broker
def test_a_device_called_root_cannot_steer_a_rollout(broker, tmp_path):
    # The account "root" publishes /switch/state/root (the ACL's pattern allows it); a trigger for
    # "its" topic /switch/cmd/root would reach every device, past stages and concurrency.
    light = LightFleet(broker.host, broker.port, per_connection=8)
    for i in range(8):
        light.add("dev-%02d" % i, "1.0.0", Behavior(**FAST))
    light.add("root", "1.0.0", Behavior(**FAST))
    light.start()
    conn = mqtt.connect(None, host=broker.host, port=broker.port)
    log = str(tmp_path / "r.jsonl")
    try:
        opts = rollout.Options((1.0,), max_concurrent=1, device_timeout=10)
        engine = rollout.Rollout(conn, MANIFEST, opts, log, job="root-attack")
        summary = engine.run()
    finally:
        conn.close()
        light.stop()
    assert "root" not in engine.targets and summary["outcomes"] == {"ok": 8}
    for device_id, device in light.devices.items():  # each device only its own trigger
        assert len(device.commands) == (device_id != "root"), (device_id, device.commands)


@needs_broker
def test_one_flooding_device_does_not_blind_the_tracker(broker, tmp_path, monkeypatch):
    # A device republishing its state hundreds of times a second kept the tracker's one "last heard"
    # fresh, so a final state the broker dropped (here: the live "ok" of three devices, lost on
    # purpose) waited for the device's deadline. Silence is per device: each is read back after
    # QUIET_S of its own silence, well before its deadline, and the flooder is reported.
    from otactl import tracking

    monkeypatch.setattr(tracking, "QUIET_S", 0.5)
    light = LightFleet(broker.host, broker.port, per_connection=8)
    for i in range(6):
        light.add("dev-%02d" % i, "1.0.0", Behavior(**FAST))
    light.add("flood", "1.0.0", Behavior("flood", flood_per_s=400, **FAST))
    light.start()
    lose = {"dev-01", "dev-03", "dev-05"}
    lost = lose_live_ok(monkeypatch, lose)
    conn = mqtt.connect(None, host=broker.host, port=broker.port)
    log = str(tmp_path / "r.jsonl")
    timeout = 20.0
    try:
        opts = rollout.Options((1.0,), max_concurrent=7, device_timeout=timeout)
        summary = rollout.Rollout(conn, MANIFEST, opts, log, job="flood").run()
    finally:
        conn.close()
        light.stop()
    assert sorted(lost) == sorted(lose)
    records = read_log(log)
    sent = {r["device"]: r["t"] for r in records if r["event"] == "trigger"}
    for r in records:
        if r["event"] == "outcome" and r["device"] in lose:  # read back before the deadline
            assert r["t"] - sent[r["device"]] < timeout / 2, r
    assert summary["outcomes"] == {"ok": 7} and summary["suspects"] == {"flood": "flooding"}



def _device_client(broker, user, client_id):
    import threading

    import paho.mqtt.client as paho

    connected = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(user, "pw-" + user)
    client.will_set("/switch/state/" + user, state(user, state="offline"), qos=1, retain=True)
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    assert connected.wait(10)
    return client


@pytest.mark.skipif(broker_module.Mosquitto.binary() is None or not __import__("shutil").which("mosquitto_passwd"),
                    reason="mosquitto and mosquitto_passwd")
def test_shipped_broker_config_ties_client_id_to_user_and_limits_size(tmp_path):
    import subprocess

    passwords, operators = tmp_path / "passwd", tmp_path / "operators"
    for path, users in ((passwords, ("dev-a", "dev-b")), (operators, ("operator",))):
        for i, user in enumerate(users):
            subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(path), user, "pw-" + user],
                           check=True, capture_output=True)
    (tmp_path / "acl").write_text(ACL)
    with broker_module.Broker(str(tmp_path / "b"), password_file=str(passwords), acl_file=str(tmp_path / "acl"),
                              operator_password_file=str(operators), backend=broker_module.Mosquitto()) as b:
        watch = broker_module.Watcher(b.host, b.operator_port, username="operator", password="pw-operator")
        dev_a = _device_client(b, "dev-a", "dev-a")
        dev_a.publish("/switch/state/dev-a", state("dev-a"), qos=1, retain=True).wait_for_publish(10)
        watch.wait_for(lambda m: m.topic == "/switch/state/dev-a" and m.state == "idle", timeout=10)
        # dev-b's account asks for dev-a's client id: it gets its own, dev-a stays connected
        dev_b = _device_client(b, "dev-b", "dev-a")
        dev_a.publish("/switch/state/dev-a", state("dev-a", state="ok"), qos=1, retain=True).wait_for_publish(10)
        watch.wait_for(lambda m: m.topic == "/switch/state/dev-a" and m.state == "ok", timeout=10)
        assert not [m for m in watch.messages if m.state == "offline"], watch.messages
        assert dev_a.is_connected()
        # a 4 MiB retained "state" is never stored, nor handed to the operator
        dev_b.publish("/switch/state/dev-b", b"x" * (4 << 20), qos=0, retain=True)
        dev_b.loop_stop()
        # a second session of the operator account, on the operators' listener: both stay connected
        fresh = broker_module.Watcher(b.host, b.operator_port, username="operator", password="pw-operator")
        fresh.publish("/otactl/sync/t", b"marker", qos=1)
        fresh.wait_for(lambda m: m.topic == "/otactl/sync/t" or m.topic == "/switch/state/dev-a", timeout=10)
        assert all(len(m.payload) < broker_module.MESSAGE_SIZE_LIMIT for m in fresh.messages + watch.messages)
        assert watch.client.is_connected() and fresh.client.is_connected()
        dev_a.loop_stop()
        watch.close()
        fresh.close()


@needs_broker
def test_two_devices_with_one_id_are_counted_once_and_reported(broker, tmp_path):
    # Both devices on one id take the trigger; the first "ok" settles the id, and the second device's
    # "downloading" after it (a job that steps back) gives them away while the rollout goes on.
    ids = ["dev-%02d" % i for i in range(4)]
    shared = rollout._order("twins", ids)[0]  # the first triggered: the rollout goes on after it
    light = LightFleet(broker.host, broker.port, per_connection=8)
    for device_id in ids:
        light.add(device_id, "1.0.0", Behavior(**dict(FAST, download_s=0.03 if device_id == shared else 0.3)))
    twin = LightFleet(broker.host, broker.port, per_connection=8)  # a second device, same id, slower
    twin.add(shared, "1.0.0", Behavior(**dict(FAST, download_s=0.4, progress_steps=4)))
    light.start()
    twin.start()
    conn = mqtt.connect(None, host=broker.host, port=broker.port)
    log = str(tmp_path / "r.jsonl")
    try:
        summary = rollout.Rollout(conn, MANIFEST, rollout.Options((1.0,), 1, 10), log, job="twins").run()
    finally:
        conn.close()
        light.stop()
        twin.stop()
    assert summary["outcomes"] == {"ok": 4} and summary["suspects"] == {shared: "duplicate_id"}
    assert [r["device"] for r in read_log(log) if r["event"] == "outcome"].count(shared) == 1
    assert twin.devices[shared].commands and light.devices[shared].commands  # both took it
