#!/usr/bin/env bash
# make messages: rewrite host_tests/messages.txt, the catalogue of every message (an OtaError's reason
# and detail, a print() line) that lib/ota and otactl make during the unit tests
# (host_tests/message_catalogue.py says why the unit tests hold them to it). Review the diff.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "messages: .venv is missing: run make venv" >&2; exit 2; }
mkdir -p build
RAW=build/messages.raw
rm -f "$RAW"
OTA_MESSAGES_RECORD="$(pwd)/$RAW" "$PY" -m pytest -q -n 2 -p no:cacheprovider host_tests/unit
LC_ALL=C sort -u "$RAW" > host_tests/messages.txt
echo "messages: $(wc -l < host_tests/messages.txt) messages in host_tests/messages.txt"
