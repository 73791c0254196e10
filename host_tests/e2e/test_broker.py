# The broker harness: a real mosquitto on a free loopback port, a paho client round-trips a retained
# message, and restart() brings the broker back on the same port (the "broker restarted mid-update"
# tests rely on it).

import pytest

from devkit import broker as broker_module

from fleet_helpers import needs_broker

pytestmark = needs_broker


def test_retained_round_trip(broker):
    sender = broker_module.Watcher(broker.host, broker.port, topics=())
    sender.publish("/switch/state/dev1", {"state": "idle", "version": "1.0.0"}, retain=True)
    sender.close()
    # A client that subscribes afterwards gets the retained message, flagged as retained.
    watch = broker_module.Watcher(broker.host, broker.port)
    msg = watch.wait_for(lambda m: m.topic == "/switch/state/dev1", timeout=5)
    assert msg.retain and msg.state == "idle" and msg.get("version") == "1.0.0"
    watch.close()


def test_restart_same_port_watcher_reconnects(broker):
    port = broker.port
    watch = broker_module.Watcher(broker.host, broker.port)
    broker.restart(down_s=0.2)
    assert broker.port == port and broker.running() and broker.starts == 2
    # paho reconnects by itself and resubscribes (on_connect): a new message still arrives.
    deadline_msg = None
    for _ in range(50):
        try:
            other = broker_module.Watcher(broker.host, broker.port, topics=())
            other.publish("/switch/state/dev2", {"state": "ok"}, retain=True)
            other.close()
            deadline_msg = watch.wait_for(lambda m: m.topic == "/switch/state/dev2", timeout=0.5)
            break
        except TimeoutError:
            continue
    assert deadline_msg is not None and deadline_msg.state == "ok"
    watch.close()


def test_restart_forgets_retained(broker):
    w = broker_module.Watcher(broker.host, broker.port, topics=())
    w.publish("/switch/state/dev3", "x", retain=True)
    w.close()
    broker.restart()
    watch = broker_module.Watcher(broker.host, broker.port)
    with pytest.raises(TimeoutError):
        watch.wait_for(lambda m: m.topic == "/switch/state/dev3", timeout=0.5)
    watch.close()


def test_stopped_broker_refuses(broker):
    broker.stop()
    assert not broker.running()
    with pytest.raises(OSError):
        broker_module.Watcher(broker.host, broker.port, timeout=1)


def test_password_file_requires_login(tmp_path):
    import subprocess
    import shutil

    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "dev", "secret123"], check=True)
    with broker_module.Broker(str(tmp_path / "b"), password_file=str(pw)) as b:
        with pytest.raises(ConnectionRefusedError):
            broker_module.Watcher(b.host, b.port, timeout=5)
        ok = broker_module.Watcher(b.host, b.port, username="dev", password="secret123")
        ok.close()
