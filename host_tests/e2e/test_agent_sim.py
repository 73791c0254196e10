# End to end on the simulator: the real `micropython` binary boots a simulated ESP32-C3 whose image
# freezes lib/ (ota.agent via the repo's main.py) and umqtt.simple; it connects to a real mosquitto,
# publishes its retained "idle" state with its version, answers a malformed trigger with its reason
# on the state topic, keeps running, and comes back after a broker restart.
import json
import os

import pytest

from paths import MICROPYTHON, ROOT
from devkit.broker import Broker, Watcher, find_backend

pytestmark = pytest.mark.skipif(not os.path.exists(MICROPYTHON) or find_backend() is None,
                                reason="needs the micropython binary and mosquitto")


def test_sim_device_idle_bad_trigger_broker_restart(tmp_path):
    from devkit import images
    from sim.runner import Device

    image = images.build_image("1.0.0", files=images.device_files())
    with Broker(str(tmp_path / "broker")) as broker:
        watch = Watcher(broker.host, broker.port)
        from devkit.simfleet import FLEET_HEAP

        dev = Device(str(tmp_path / "dev"), heapsize=FLEET_HEAP)
        cfg = {"mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 10},
               "wifi": {"ssid": "lab", "password": "password1"}}
        with open(os.path.join(ROOT, "main.py"), "rb") as f:
            main = f.read()
        dev.create(image, fs_files={"main.py": main, "config.json": json.dumps(cfg)})
        dev.start()
        try:
            idle = watch.wait_for(lambda m: m.state == "idle", timeout=30)
            assert idle.topic == "/switch/state/a0b1c2d3e4f5"
            late = Watcher(broker.host, broker.port)  # subscribes after the fact: gets it retained
            assert late.wait_for(lambda m: m.state == "idle", timeout=5).retain
            late.close()
            assert (idle.get("version"), idle.get("slot")) == ("1.0.0", "ota_0")
            watch.publish("/switch/cmd/root", b"ON")
            failed = watch.wait_for(lambda m: m.state == "failed", timeout=10)
            assert failed.get("reason") == "bad_json"
            watch.publish("/switch/cmd/a0b1c2d3e4f5", {"type": "ota_trigger", "url": "ftp://x/fw.bin"})
            assert "ftp" in watch.wait_for(lambda m: m.get("reason") == "bad_url", timeout=10).get("detail")
            broker.restart(down_s=0.5)  # retained state gone with the broker; the device republishes
            n = len(watch.messages)
            again = watch.wait_for(lambda m: m.topic.endswith("a0b1c2d3e4f5"), timeout=30, start=n)
            assert again.get("reason") == "bad_url"
            assert dev.result is None  # still running: no crash, no reset
        finally:
            dev.stop()
            watch.close()
        assert "Traceback" not in dev.console()
