# Shared by the fleet tests (e2e/ and faults/): the release manifest, the broker ACL, light device
# timings, the CLI run in-process and readers of the rollout log. Their fixtures (a real mosquitto,
# light devices on it, an otactl MQTT connection) are in conftest.py.
import json

import pytest

from devkit import broker as broker_module

needs_broker = pytest.mark.skipif(broker_module.find_backend() is None, reason="no mosquitto/amqtt")

MANIFEST = {"version": "1.0.1", "url": "https://fw.example/releases/firmware-v1.0.1.bin",
            "sha256": "ab" * 32, "size": 1462272, "project": "ota-switch"}
# The fleet's mosquitto ACL (README "Broker access control"; mosquitto.conf(5)): `pattern` lines apply
# to every user, %u is the user name.
ACL = """\
user operator
topic write /switch/cmd/#
topic read #
topic readwrite /otactl/#

pattern write /switch/state/%u
pattern read /switch/cmd/%u
pattern read /switch/cmd/root
"""
# A light device's timings for rollout tests: seconds, not the minutes of a real download.
FAST = dict(download_s=0.03, reboot_s=0.01, confirm_s=0.01)


def broker_args(broker):
    return ["--broker", "%s:%d" % (broker.host, broker.port)]


def run_cli(argv):
    from otactl import cli

    return cli.main(argv)


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def triggers_and_outcomes(records):
    # From a rollout log: the devices triggered, in order, and each device's outcome record; a device
    # with two outcomes fails the test.
    triggers = [r["device"] for r in records if r["event"] == "trigger"]
    outcomes = {}
    for r in records:
        if r["event"] == "outcome":
            assert r["device"] not in outcomes, "two outcomes for %s" % r["device"]
            outcomes[r["device"]] = r
    return triggers, outcomes


def max_in_flight(records):
    # The most devices between their trigger and their outcome at once, from a rollout log.
    now = peak = 0
    for r in records:
        if r["event"] == "trigger":
            now += 1
            peak = max(peak, now)
        elif r["event"] == "outcome":
            now -= 1
    return peak


def ids(n, prefix="dev"):
    return ["%s-%02d" % (prefix, i) for i in range(n)]


def lose_live_ok(monkeypatch, lose):
    # The broker drops the live "ok" of the devices in `lose` to otactl's tracker (as mosquitto does to a
    # subscriber that falls behind, max_queued_messages); their retained state still arrives. Returns
    # the list of devices whose message was dropped, filled as it happens.
    from otactl import tracking

    lost = []
    real = tracking.Tracker.on_message

    def lossy(self, topic, payload, retained):
        device = topic.rsplit("/", 1)[-1]
        if device in lose and not retained and b'"ok"' in payload and device not in lost:
            lost.append(device)
            return
        real(self, topic, payload, retained)

    monkeypatch.setattr(tracking.Tracker, "on_message", lossy)
    return lost
