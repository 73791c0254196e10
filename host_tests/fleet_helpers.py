# Shared by test_fleet_cli, test_rollout, test_scale: a real mosquitto (devkit/broker.py), light
# devices (sim/lightdevice.py), an otactl MQTT connection, and the CLI run in-process.
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from devkit import broker as broker_module  # noqa: E402

needs_broker = pytest.mark.skipif(broker_module.find_backend() is None, reason="no mosquitto/amqtt")

MANIFEST = {"version": "1.0.1", "url": "https://fw.example/releases/firmware-v1.0.1.bin",
            "sha256": "ab" * 32, "size": 1462272, "project": "ota-switch"}


@pytest.fixture
def broker(tmp_path):
    with broker_module.Broker(str(tmp_path / "broker")) as b:
        yield b


@pytest.fixture
def manifest_file(tmp_path):
    path = tmp_path / "firmware-v1.0.1.json"
    path.write_text(json.dumps(MANIFEST))
    return str(path)


def broker_args(broker):
    return ["--broker", "%s:%d" % (broker.host, broker.port)]


def run_cli(argv):
    from otactl import cli

    return cli.main(argv)


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
