# The README's first command: `make demo` runs `python -m devkit demo` (`otactl demo` forwards
# there). It must finish the whole cycle on a fresh work folder, exit 0, print the summary, and leave
# no process behind.
import os
import subprocess
import sys

import pytest

from devkit.broker import find_backend

from paths import ROOT as REPO


@pytest.mark.skipif(find_backend() is None, reason="needs mosquitto (or amqtt)")
def test_demo_runs_the_whole_cycle(tmp_path):
    run = subprocess.run([sys.executable, "-m", "devkit", "demo", "--workdir", str(tmp_path / "demo")],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '$ mosquitto_pub -t "/switch/cmd/root" -m \'{"type":"ota_trigger","url":"https://' in run.stdout
    assert "summary: 1.0.0 -> 1.0.1 on ota_1 (otadata: VALID" in run.stdout
    assert "downloading [" in run.stdout and "device: ok" in run.stdout
    # Nothing it started is still running (the device, the broker, nginx).
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""


def test_demo_reports_a_missing_broker_clearly(tmp_path):
    env = dict(os.environ, PATH="/nonexistent")
    run = subprocess.run([sys.executable, "-c", "import devkit.broker as b; b.find_backend = lambda: None;"
                          "from otactl import cli; import sys; sys.argv=['otactl','demo','--workdir',%r];"
                          "sys.exit(cli.main())" % str(tmp_path / "d")],
                         cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1
    assert run.stderr.strip().startswith("otactl: missing_dependency: no MQTT broker")


def _amqtt():
    from devkit.broker import Amqtt

    return Amqtt.binary()


@pytest.mark.skipif(_amqtt() is None, reason="amqtt not installed (bootstrap installs it where mosquitto "
                                             "is missing, or with OTA_WITH_AMQTT=1 as CI does)")
def test_demo_on_the_fallbacks_amqtt_and_the_dev_server(tmp_path):
    # A fresh machine without mosquitto and nginx: the amqtt broker from PyPI and our own HTTPS server.
    env = dict(os.environ, OTA_BROKER="amqtt")
    run = subprocess.run([sys.executable, "-m", "otactl", "demo", "--workdir", str(tmp_path / "demo"),
                          "--server", "dev"], cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "MQTT broker: amqtt" in run.stdout and "HTTPS server: otactl's dev server" in run.stdout
    assert "summary: 1.0.0 -> 1.0.1 on ota_1 (otadata: VALID" in run.stdout
