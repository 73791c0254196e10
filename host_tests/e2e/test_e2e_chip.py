# The agent on a simulator no kinder than the chip (docs/CHIP.md), end to end: this checkout's main.py
# -> ota.agent on the real micropython binary, a real mosquitto (plain and TLS listeners) and nginx.
# Each scenario is what a real C3 does and the simulator did not: NTP that fails at power-on (the RTC
# then says 2000-01-01 and no certificate verifies), a Wi-Fi that connects seconds late, and a power
# cut that is silence (the broker learns of it only when the keepalive runs out).
import hashlib
import os
import time

import pytest

from devkit import simfleet
from devkit.broker import Watcher, find_backend
from devkit.nginx import find_nginx

pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                reason="needs mosquitto (or amqtt) and nginx")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1")}
    with simfleet.lab(tmp_path_factory.mktemp("chip"), images, broker_tls=True) as world:
        yield world


class Rig:
    """One simulated device (sim.json settings as given) plus a watcher on its state topic."""

    def __init__(self, world, name, device_id, tls=False, mqtt=None, **sim_settings):
        broker = world["broker"]
        self.world, self.device_id = world, device_id
        self.state_topic = "/switch/state/" + device_id
        mqtt = dict(mqtt or {})
        if tls:
            mqtt.update(host="localhost", port=broker.tls_port, tls=True, ca_path="ca.der")
        self.device = simfleet.new_device(os.path.join(world["root"], name), world["images"]["1.0.0"],
                                          broker.host, broker.port, ca_der=world["pki"].ca_der,
                                          unique_id=device_id, mqtt=mqtt, **sim_settings)
        self.watch = Watcher(broker.host, broker.port, topics=(self.state_topic,))

    def wait_for(self, predicate, timeout=60, start=0):
        try:
            return self.watch.wait_for(lambda m: m.topic == self.state_topic and predicate(m), timeout, start)
        except TimeoutError as e:
            raise TimeoutError("%s\nboots=%s\n%s" % (e, self.device.boots(), self.device.console()[-3000:]))

    def events(self):
        with open(self.device.path("events.log")) as f:
            return f.read().split("\n")[:-1]

    def close(self):
        self.device.stop()
        self.watch.close()


@pytest.fixture
def rigs(world):
    made = []

    def make(*args, **kwargs):
        made.append(Rig(world, *args, **kwargs))
        return made[-1]

    yield make
    for rig in made:
        rig.close()
    for rig in made:
        assert "Traceback" not in rig.device.console(), rig.device.console()[-3000:]


def test_ntp_failing_at_power_on_with_mqtt_over_tls_the_agent_comes_up(rigs):
    # Until ntptime succeeds the broker's certificate "starts in the future": the first MQTT
    # handshake fails, the loop sets the clock at its next turn and connects.
    rig = rigs("ntp-tls", "c41900000001", tls=True, ntp_failures=1)
    rig.device.start()
    rig.wait_for(lambda m: m.state == "idle")
    assert rig.events()[:2] == ["ntptime failed", "ntptime"]
    assert "The certificate validity starts in the future" in rig.device.console()


def test_ntp_failing_at_power_on_with_plain_mqtt_the_update_still_verifies(world, rigs):
    # Plain MQTT connects without the clock, so nothing retries NTP at connect: the job must, or the
    # firmware server's certificate never verifies (tls_verify_failed) until the next reconnect.
    rig = rigs("ntp-plain", "c41900000002", ntp_failures=1)
    rig.device.start()
    rig.wait_for(lambda m: m.state == "idle")
    assert rig.events() == ["ntptime failed"]
    image = world["images"]["1.0.1"]
    rig.watch.publish("/switch/cmd/" + rig.device_id,
                      {"type": "ota_trigger", "url": world["web"].url("firmware-1.0.1.bin"), "id": "ntp-1",
                       "sha256": hashlib.sha256(image).hexdigest()})
    done = rig.wait_for(lambda m: m.state in ("ok", "failed") and m.get("job") == "ntp-1")
    assert (done.state, done.get("version"), done.get("reason")) == ("ok", "1.0.1", None)


def test_wifi_that_comes_back_late_is_waited_for_not_connected_again(rigs):
    # The AP is away at power-on: the agent's first wait for an IP runs out (the driver keeps trying),
    # then the AP comes back while the driver re-associates by itself. Calling connect() then raises
    # 'Wifi Internal Error' on the chip; the agent must wait for the running association instead.
    rig = rigs("late-wifi", "c41900000003", wifi_connect_ms=1000)
    open(rig.device.path("wifi_down"), "w").close()
    rig.device.start()
    rig.device.wait_for(r"agent: connection lost: .*wifi not connected", timeout=60)
    os.remove(rig.device.path("wifi_down"))
    rig.wait_for(lambda m: m.state == "idle")
    assert "Wifi Internal Error" not in rig.device.console()


KEEPALIVE_S = 2


@pytest.mark.parametrize("silent", [True, False])
def test_a_power_cut_is_silence_offline_comes_when_the_keepalive_runs_out(rigs, silent):
    # A C3 without power sends no FIN: the broker publishes the last will ("offline") only after 1.5 x
    # the keepalive without a packet (MQTT 3.1.1 section 3.1.2.10). A killed host process is the
    # opposite: its kernel closes the socket and "offline" is out at once. Both end in "offline", and
    # only a silent cut takes at least the keepalive: what rollout deadlines and `offline` handling
    # must be tested against.
    rig = rigs("cut-%s" % ("silent" if silent else "loud"), "c4190000000%d" % (5 if silent else 6),
               mqtt={"keepalive_s": KEEPALIVE_S})
    rig.device.start()
    rig.wait_for(lambda m: m.state == "idle")
    mark = len(rig.watch.messages)
    cut = time.monotonic()
    rig.device.power_off(silent=silent)
    offline = rig.wait_for(lambda m: m.state == "offline", timeout=60, start=mark)
    assert rig.device.result == "power_cut"
    if silent:
        assert offline.t - cut >= KEEPALIVE_S, "the broker heard of a silent power cut"
        assert rig.device.counters()["boots"][-1].get("silent") is True


def test_rollout_against_a_device_that_goes_silent_mid_download(tmp_path):
    # Two devices, one rollout stage; one device loses power (silently) once it reports
    # "downloading". The broker keeps its retained "downloading" until the keepalive runs out, then
    # says "offline": neither is an outcome. The rollout must wait for the device's deadline and call
    # it a timeout, while the other device's "ok" counts as it comes.
    import json
    import subprocess
    import sys

    from devkit.devserver import DevServer
    from fleet_helpers import read_log

    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1")}
    with simfleet.lab(tmp_path / "lab", images) as world:
        broker, pki = world["broker"], world["pki"]
        with DevServer(world["www"], pki.server_cert, pki.server_key) as slow:
            slow.faults.trickle = 64 * 1024  # bytes/s: the download lasts seconds, the cut lands in it
            image = images["1.0.1"]
            manifest = tmp_path / "firmware-v1.0.1.json"
            manifest.write_text(json.dumps({"url": slow.url("firmware-1.0.1.bin"), "version": "1.0.1",
                                            "size": len(image), "sha256": hashlib.sha256(image).hexdigest()}))
            rigs = [Rig(world, name, device_id, mqtt={"keepalive_s": KEEPALIVE_S})
                    for name, device_id in (("quiet", "c41900000007"), ("fine", "c41900000008"))]
            quiet, fine = rigs
            try:
                for rig in rigs:
                    rig.device.start()
                    rig.wait_for(lambda m: m.state == "idle")
                log = tmp_path / "rollout.jsonl"
                otactl = os.path.join(os.path.dirname(sys.executable), "otactl")
                env = dict(os.environ, OTACTL_BROKER=broker.host, OTACTL_PORT=str(broker.port))
                run = subprocess.Popen([otactl, "rollout", "--manifest", str(manifest), "--stages", "1",
                                        "--max-concurrent", "2", "--device-timeout", "20",
                                        "--abort-failure-rate", "1", "--success-threshold", "0.5",
                                        "--log", str(log), "--job", "silent-1"],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                quiet.wait_for(lambda m: m.state == "downloading" and m.get("job") == "silent-1")
                cut = time.monotonic()
                quiet.device.power_off(silent=True)
                out, _ = run.communicate(timeout=120)
                assert run.returncode == 0, out
                outcomes = {r["device"]: r for r in read_log(str(log)) if r["event"] == "outcome"}
                assert outcomes["c41900000008"]["outcome"] == "ok", out
                assert outcomes["c41900000007"]["outcome"] == "timeout", out
                offline = quiet.wait_for(lambda m: m.state == "offline")
                assert offline.t - cut >= KEEPALIVE_S
                assert fine.device.boots()[-1]["version"] == "1.0.1"
            finally:
                for rig in rigs:
                    rig.close()
