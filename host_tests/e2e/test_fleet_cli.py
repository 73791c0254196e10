# `otactl trigger` and `otactl status` against a real mosquitto: the exact payload a subscriber (a
# device) sees, the topics, not retained; unknown ids, an unreachable broker and a bad manifest each
# give one `otactl: reason: message` line; the status table from retained states.
import json

import pytest

from fleet_helpers import MANIFEST, broker_args, broker_module, needs_broker, run_cli
from devkit.broker import free_port

pytestmark = needs_broker


def seed_states(broker, states):
    w = broker_module.Watcher(broker.host, broker.port, topics=())
    for fields in states:
        w.publish("/switch/state/" + fields["id"], fields, retain=True)
    w.close()


def state(device_id, version="1.0.0", state="idle", **extra):
    fields = {"id": device_id, "version": version, "slot": "ota_0", "state": state, "progress": None,
              "bytes": None, "total": None, "job": None, "reason": None, "detail": None, "heap": 150000,
              "uptime_s": 5, "ts": None}
    fields.update(extra)
    return fields


def test_trigger_device_exact_payload(broker, manifest_file, capsys):
    seed_states(broker, [state("dev-a"), state("dev-b")])
    watch = broker_module.Watcher(broker.host, broker.port, topics=("/switch/cmd/#",))
    argv = ["trigger", "--manifest", manifest_file, "--device", "dev-a", "--job", "job-7"] + broker_args(broker)
    assert run_cli(argv) == 0
    msg = watch.wait_for(lambda m: True, timeout=5)
    assert msg.topic == "/switch/cmd/dev-a" and not msg.retain
    assert json.loads(msg.payload) == {"type": "ota_trigger", "url": MANIFEST["url"], "sha256": MANIFEST["sha256"],
                                       "size": MANIFEST["size"], "version": "1.0.1", "id": "job-7"}
    assert list(json.loads(msg.payload))[:2] == ["type", "url"]  # the seed guide's message first
    watch.close()
    # not retained: a device subscribing later gets nothing
    late = broker_module.Watcher(broker.host, broker.port, topics=("/switch/cmd/#",))
    with pytest.raises(TimeoutError):
        late.wait_for(lambda m: True, timeout=0.5)
    late.close()
    assert "/switch/cmd/dev-a <- " in capsys.readouterr().out


def test_trigger_all_url_only(broker):
    watch = broker_module.Watcher(broker.host, broker.port, topics=("/switch/cmd/#",))
    assert run_cli(["trigger", "--url", "https://h/fw.bin", "--all", "--job", "j1"] + broker_args(broker)) == 0
    msg = watch.wait_for(lambda m: True, timeout=5)
    assert msg.topic == "/switch/cmd/root"
    assert json.loads(msg.payload) == {"type": "ota_trigger", "url": "https://h/fw.bin", "id": "j1"}
    watch.close()


def test_trigger_unknown_device_refused_unless_force(broker, manifest_file, capsys):
    seed_states(broker, [state("dev-a")])
    watch = broker_module.Watcher(broker.host, broker.port, topics=("/switch/cmd/#",))
    base = ["trigger", "--manifest", manifest_file, "--device", "dev-zz"] + broker_args(broker)
    assert run_cli(base) == 1
    err = capsys.readouterr().err
    assert err.startswith("otactl: unknown_device: dev-zz: no retained state") and err.count("\n") == 1
    with pytest.raises(TimeoutError):
        watch.wait_for(lambda m: True, timeout=0.3)
    assert run_cli(base + ["--force"]) == 0
    assert watch.wait_for(lambda m: True, timeout=5).topic == "/switch/cmd/dev-zz"
    watch.close()


def test_unreachable_broker_one_line(manifest_file, capsys):
    port = free_port()  # nothing listens there
    assert run_cli(["trigger", "--manifest", manifest_file, "--all", "--broker", "127.0.0.1:%d" % port]) == 1
    err = capsys.readouterr().err
    assert err.startswith("otactl: broker_unreachable: cannot connect to the MQTT broker at 127.0.0.1:%d" % port)
    assert err.count("\n") == 1
    assert run_cli(["status", "--broker", "127.0.0.1", "--port", str(port)]) == 1
    assert "broker_unreachable" in capsys.readouterr().err


def test_broker_from_environment(broker, monkeypatch, capsys):
    seed_states(broker, [state("dev-env")])
    monkeypatch.setenv("OTACTL_BROKER", "%s:%d" % (broker.host, broker.port))
    assert run_cli(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "dev-env"


def test_malformed_manifest_and_bad_trigger(broker, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.0.1", "url": "https://h/x.bin"}')
    assert run_cli(["trigger", "--manifest", str(bad), "--all"] + broker_args(broker)) == 1
    assert capsys.readouterr().err.startswith("otactl: bad_manifest: ")
    # the device's own parser runs before anything is sent
    assert run_cli(["trigger", "--url", "ftp://h/x.bin", "--all"] + broker_args(broker)) == 1
    assert capsys.readouterr().err.startswith("otactl: bad_url: the device would refuse this trigger")


def test_sign_key_signs_for_the_device(broker, manifest_file, tmp_path, capsys):
    signing = pytest.importorskip("otactl.signing")
    key = signing.generate_key()
    path = tmp_path / "key.pem"
    path.write_bytes(signing.private_key_pem(key))
    seed_states(broker, [state("dev-a")])
    watch = broker_module.Watcher(broker.host, broker.port, topics=("/switch/cmd/#",))
    argv = ["trigger", "--manifest", manifest_file, "--device", "dev-a", "--job", "job-s", "--sign-key", str(path)]
    assert run_cli(argv + broker_args(broker)) == 0
    signed = json.loads(watch.wait_for(lambda m: True, timeout=5).payload)
    watch.close()
    assert signed["target"] == "dev-a" and signed["id"] == "job-s" and signed["expires"] > 0
    assert signing.verify_trigger(signed, signing.public_key_hex(key))
    path.write_text("not a key")
    assert run_cli(argv + broker_args(broker)) == 1
    assert capsys.readouterr().err.startswith("otactl: bad_key: ")


def test_status_table_from_retained_states(broker, capsys):
    seed_states(broker, [
        state("dev-a", "1.0.1", "ok", job="job-1"),
        state("dev-b", "1.0.0", "downloading", progress=42, job="job-1", bytes=614400, total=1462272),
        state("dev-c", "1.0.0", "failed", job="job-1", reason="bad_sha256", detail="recv=aa expect=bb"),
        {"id": "dev-d", "version": "1.0.0", "slot": "ota_1", "state": "offline"},
    ])
    assert run_cli(["status"] + broker_args(broker)) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if "dev-" in line}
    assert set(rows) == {"dev-a", "dev-b", "dev-c", "dev-d"}
    assert "1.0.1" in rows["dev-a"] and " ok " in rows["dev-a"]
    assert "downloading" in rows["dev-b"] and "42%" in rows["dev-b"] and "########" in rows["dev-b"]
    assert "bad_sha256" in rows["dev-c"] and "failed" in rows["dev-c"]
    assert "offline" in rows["dev-d"] and "ota_1" in rows["dev-d"]
    assert "4 devices: " in out and "1.0.0 3" in out


def test_status_watch_sees_live_updates(broker, capsys):
    seed_states(broker, [state("dev-a")])
    import threading

    timer = threading.Timer(0.5, seed_states, (broker, [state("dev-new", "1.0.1", "ok")]))
    timer.start()
    assert run_cli(["status", "--watch", "--timeout", "1.5"] + broker_args(broker)) == 0
    timer.join()
    assert "dev-new" in capsys.readouterr().out


def test_status_empty_broker(broker, capsys):
    assert run_cli(["status"] + broker_args(broker)) == 0
    assert "no device states" in capsys.readouterr().out
