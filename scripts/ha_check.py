"""`make ha-check`: a real Home Assistant (2025.4.4, its own venv: scripts/ha_venv.sh) with its MQTT
integration on our mosquitto, and a simulated ESP32-C3 with ha.discovery on. Without a browser:

  1. mosquitto, nginx (TLS, rate-limited so the progress bar has time to move), a device on 1.0.0;
  2. `hass` with a minimal configuration (http, api, config, onboarding), started with --skip-pip;
  3. a user onboarded through the REST API (/api/onboarding/users, then /auth/token for a token);
  4. the mqtt config entry added through /api/config/config_entries/flow, pointing at our broker;
  5. the entity appears from the device's discovery config: installed 1.0.0; `otactl announce`
     (in-process) publishes 1.0.1 and the entity's latest_version follows;
  6. update.install through /api/services/update/install; the entity's in_progress and
     update_percentage are polled and printed as they move; the check passes when the entity says
     installed 1.0.1, not in progress, and the device's state says ok.

Exit 0 on success; 1 with what went wrong (HA's log tail). Prints a transcript (README "Home Assistant").
Run with the project's .venv python (the harness); HA runs from OTA_HA_VENV (scripts/ha_venv.sh prints it).
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "lib")]

from devkit import simfleet  # noqa: E402
from devkit.broker import Broker, Watcher, free_port  # noqa: E402
from devkit.nginx import Nginx  # noqa: E402
from devkit.tls import make_pki  # noqa: E402
from otactl import announce  # noqa: E402

DEVICE = "c3c3c3c30001"
SIZE = 786432
RATE = 196608  # bytes/s: a 768 KiB download takes about 4 s, long enough to watch the bar move
T0 = time.monotonic()


def say(text):
    print("[%6.1fs] %s" % (time.monotonic() - T0, text), flush=True)


class HA:
    def __init__(self, venv, workdir):
        self.venv, self.workdir = venv, workdir
        self.config = os.path.join(workdir, "config")
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.client_id = self.base + "/"
        self.token = None
        self.process = None
        self.log = os.path.join(workdir, "home-assistant.log")

    def start(self):
        os.makedirs(self.config, exist_ok=True)
        with open(os.path.join(self.config, "configuration.yaml"), "w") as f:
            f.write("homeassistant:\n  name: OTA check\n  latitude: 52.5\n  longitude: 13.4\n"
                    "  elevation: 34\n  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n"
                    "  country: DE\n"
                    "http:\n  server_host: 127.0.0.1\n  server_port: %d\n"
                    "api:\nconfig:\nonboarding:\n"
                    "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n" % self.port)
        self.process = subprocess.Popen([os.path.join(self.venv, "bin", "hass"), "-c", self.config, "--skip-pip",
                                         "--log-file", self.log, "--log-no-color"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("hass exited with %s" % self.process.returncode)
            try:
                steps = self.request("GET", "/api/onboarding", auth=False)
                return steps
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        raise RuntimeError("hass did not answer on %s within 300 s" % self.base)

    def request(self, method, path, body=None, auth=True, form=False):
        headers = {}
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = "Bearer " + self.token
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def onboard(self):
        answer = self.request("POST", "/api/onboarding/users", {
            "client_id": self.client_id, "name": "OTA check", "username": "ota", "password": "ota-check-secret",
            "language": "en"}, auth=False)
        token = self.request("POST", "/auth/token", {"grant_type": "authorization_code", "code": answer["auth_code"],
                                                     "client_id": self.client_id}, auth=False, form=True)
        self.token = token["access_token"]

    def add_mqtt(self, host, port):
        flow = self.request("POST", "/api/config/config_entries/flow", {"handler": "mqtt",
                                                                        "show_advanced_options": False})
        steps = [flow.get("step_id")]
        while flow.get("type") == "form" or flow.get("type") == "menu":
            if flow.get("type") == "menu":  # pick the manual broker set-up
                flow = self.request("POST", "/api/config/config_entries/flow/" + flow["flow_id"],
                                    {"next_step_id": "broker"})
            else:
                flow = self.request("POST", "/api/config/config_entries/flow/" + flow["flow_id"],
                                    {"broker": host, "port": port})
            steps.append(flow.get("step_id") or flow.get("type"))
            if len(steps) > 5:
                raise RuntimeError("mqtt config flow did not finish: %r" % flow)
        if flow.get("type") != "create_entry":
            raise RuntimeError("mqtt config flow: %r" % flow)
        return steps

    def states(self):
        return self.request("GET", "/api/states")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log_tail(self, n=40):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"


def find_entity(ha, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entity in ha.states():
            if entity["entity_id"].startswith("update.") and DEVICE in entity["entity_id"]:
                return entity
        time.sleep(0.5)
    raise RuntimeError("no update entity for %s in HA after %d s" % (DEVICE, timeout))


def entity_state(ha, entity_id):
    return ha.request("GET", "/api/states/" + entity_id)


def wait_entity(ha, entity_id, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entity = entity_state(ha, entity_id)
        if predicate(entity):
            return entity
        time.sleep(0.2)
    raise RuntimeError("timed out waiting for %s: %r" % (what, entity))


def show(entity):
    a = entity["attributes"]
    return "%s state=%s installed=%s latest=%s in_progress=%s update_percentage=%s" % (
        entity["entity_id"], entity["state"], a.get("installed_version"), a.get("latest_version"),
        a.get("in_progress"), a.get("update_percentage"))


def main():
    venv = os.environ.get("OTA_HA_VENV") or os.path.expanduser("~/.cache/ota-ha/ha-2025.4.4")
    if not os.path.exists(os.path.join(venv, "bin", "hass")):
        print("ha-check: no Home Assistant in %s: run scripts/ha_venv.sh (make ha-check does)" % venv, file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="ota-ha-check-", dir=os.environ.get("OTA_HA_WORK"))
    pki = make_pki(os.path.join(work, "pki"))
    www = os.path.join(work, "www")
    os.makedirs(www)
    image = simfleet.firmware("1.0.1", size=SIZE)
    with open(os.path.join(www, "firmware-v1.0.1.bin"), "wb") as f:
        f.write(image)
    ha = HA(venv, work)
    device = None
    try:
        with Broker(os.path.join(work, "broker")) as broker, Nginx(www, pki.server_cert, pki.server_key,
                                                                   limit_rate=RATE) as web:
            say("mosquitto on %s:%d, nginx on %s (%d KB/s)" % (broker.host, broker.port, web.url(""), RATE // 1024))
            devdir = os.path.join(work, "device")
            device = simfleet.new_device(devdir, simfleet.firmware("1.0.0"), broker.host, broker.port,
                                         ca_der=pki.ca_der, unique_id=DEVICE,
                                         ota={"progress_interval_s": 1, "progress_bytes": 32768},
                                         ha={"discovery": True})
            watch = Watcher(broker.host, broker.port, topics=("/switch/state/" + DEVICE,))
            device.start()
            watch.wait_for(lambda m: m.state == "idle", 60)
            say("device %s: idle on 1.0.0, ha.discovery on" % DEVICE)
            version = ha.start()
            say("Home Assistant 2025.4.4 up on %s (onboarding steps: %s)" % (ha.base, ", ".join(
                s["step"] for s in version if isinstance(s, dict))))
            ha.onboard()
            say("user onboarded via /api/onboarding/users, token via /auth/token")
            steps = ha.add_mqtt(broker.host, broker.port)
            say("mqtt config entry added via /api/config/config_entries/flow (steps: %s)" % " -> ".join(map(str, steps)))
            entity_id = find_entity(ha)["entity_id"]
            # Created from the discovery config first; available and versioned once its state and
            # availability messages (retained) are in.
            entity = wait_entity(ha, entity_id, lambda e: e["state"] != "unavailable"
                                 and e["attributes"].get("installed_version"), 30, "the entity's state")
            say("entity appeared: " + show(entity))
            if entity["attributes"].get("installed_version") != "1.0.0":
                raise RuntimeError("installed_version is not 1.0.0: %r" % entity)
            manifest = {"version": "1.0.1", "url": web.url("firmware-v1.0.1.bin"),
                        "sha256": hashlib.sha256(image).hexdigest(), "size": SIZE}
            _, payload = announce.announcement(manifest, notes_url="https://example.com/ota/notes/1.0.1",
                                               summary="Relay debounce fixed", job="ha-check-1")
            watch.publish(announce.RELEASE_TOPIC, payload, qos=1, retain=True)
            say("announced 1.0.1 on %s (retained)" % announce.RELEASE_TOPIC)
            entity = wait_entity(ha, entity_id, lambda e: e["attributes"].get("latest_version") == "1.0.1", 30,
                                 "latest_version 1.0.1")
            say("entity: " + show(entity) + " release_url=" + str(entity["attributes"].get("release_url")))
            ha.request("POST", "/api/services/update/install", {"entity_id": entity_id})
            say("POST /api/services/update/install {\"entity_id\": \"%s\"}" % entity_id)
            seen, last = [], None
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                entity = entity_state(ha, entity_id)
                a = entity["attributes"]
                now = (a.get("in_progress"), a.get("update_percentage"), a.get("installed_version"))
                if now != last:
                    say("entity: " + show(entity))
                    seen.append(now)
                    last = now
                if a.get("installed_version") == "1.0.1" and not a.get("in_progress"):
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError("the entity never reached 1.0.1: %r" % (seen,))
            ok = watch.wait_for(lambda m: m.state in ("ok", "failed", "rolled_back"), 30)
            if (ok.state, ok.get("version")) != ("ok", "1.0.1"):
                raise RuntimeError("device state: %r" % ok)
            moving = sorted({pct for busy, pct, _ in seen if busy and pct is not None})
            if not any(0 < pct < 100 for pct in moving):
                raise RuntimeError("no progress between 0 and 100 seen: %r" % (seen,))
            t = ok.get("t") or {}
            say("device: ok on 1.0.1; its telemetry: %s" % json.dumps(t, sort_keys=True))
            say("PASS: entity appeared on 1.0.0, offered 1.0.1, Install ran it with progress %s, "
                "ended on 1.0.1" % moving)
            watch.publish(announce.RELEASE_TOPIC, b"", qos=1, retain=True)
            watch.close()
            return 0
    except Exception as e:
        say("FAIL: %s" % e)
        print(ha.log_tail(), file=sys.stderr)
        if device is not None:
            print(device.console()[-3000:], file=sys.stderr)
        return 1
    finally:
        if device is not None:
            device.stop()
        ha.stop()


if __name__ == "__main__":
    sys.exit(main())
