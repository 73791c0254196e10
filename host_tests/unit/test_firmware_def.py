"""firmware/: the board definition refers only to things that exist, keeps rollback, puts a version into
the app descriptor; the make targets fail with a clear message when what they need is missing.
(The build itself needs ESP-IDF and a MicroPython checkout; it cannot run here: docs/HARDWARE.md.)"""
import os
import re
import subprocess

from otactl import partitions

from paths import ROOT
BOARD = os.path.join(ROOT, "firmware", "boards", "OTA_SWITCH_C3")
# The stock board the definition builds on, named as ports/esp32/CMakeLists.txt resolves it (relative to
# ports/esp32); it exists at every release from v1.24.1 to master (checked against micropython/micropython).
STOCK_BOARD = "boards/ESP32_GENERIC_C3/mpconfigboard.cmake"


def read(name):
    with open(os.path.join(BOARD, name)) as f:
        return f.read()


def sdkconfig_values(text):
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))


def test_board_files_exist():
    for name in ("mpconfigboard.cmake", "mpconfigboard.h", "sdkconfig.board", "manifest.py"):
        assert os.path.exists(os.path.join(BOARD, name)), name


def test_cmake_builds_on_the_stock_c3_board_and_appends_ours():
    cmake = read("mpconfigboard.cmake")
    code = [line for line in cmake.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    # The stock definition first (its target, its fragments: -Os from sdkconfig.riscv, REV_MIN_3 from
    # sdkconfig.c3usb), never a copy of its fragment list, which the next release renames.
    assert code[0] == "include(%s)" % STOCK_BOARD
    assert "set(SDKCONFIG_DEFAULTS" not in cmake and "set(IDF_TARGET" not in cmake
    appended = re.search(r"list\(APPEND SDKCONFIG_DEFAULTS(.*?)\)", cmake, re.S).group(1).split()
    assert appended == ["${MICROPY_BOARD_DIR}/sdkconfig.board", "${CMAKE_BINARY_DIR}/sdkconfig.ota"]
    assert os.path.exists(os.path.join(BOARD, "sdkconfig.board"))
    # The repository root as the cmake file computes it holds partitions.csv and lib/.
    repo = os.path.normpath(os.path.join(BOARD, "../../.."))
    assert "${MICROPY_BOARD_DIR}/../../.." in cmake and repo == ROOT
    assert "${OTA_REPO_DIR}/partitions.csv" in cmake and os.path.exists(os.path.join(repo, "partitions.csv"))
    assert "set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)" in cmake


def test_build_is_pinned_to_the_documented_release():
    with open(os.path.join(ROOT, "firmware", "release.env")) as f:
        tag = re.search(r"^MICROPYTHON_TAG=(v\d+\.\d+\.\d+)$", f.read(), re.M).group(1)
    with open(os.path.join(ROOT, "firmware", "build.sh")) as f:
        build = f.read()
    assert ". firmware/release.env" in build and '"$TAG" = "$MICROPYTHON_TAG"' in build
    with open(os.path.join(ROOT, "docs", "HARDWARE.md")) as f:
        assert "git clone -b %s " % tag in f.read()


def test_generated_fragment_sets_version_and_table():
    cmake = read("mpconfigboard.cmake")
    for line in ('CONFIG_PARTITION_TABLE_CUSTOM=y', 'CONFIG_APP_PROJECT_VER_FROM_CONFIG=y',
                 'CONFIG_APP_PROJECT_VER=\\"${OTA_FIRMWARE_VERSION}\\"',
                 'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\\"${OTA_REPO_DIR}/partitions.csv\\"'):
        assert line in cmake, line
    assert "$ENV{OTA_FIRMWARE_VERSION}" in cmake


def test_sdkconfig_keeps_rollback_and_includes_the_version():
    values = sdkconfig_values(read("sdkconfig.board"))
    assert values["CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE"] == "y"
    assert values["CONFIG_ESPTOOLPY_FLASHSIZE_4MB"] == "y"
    # sdkconfig.base sets both to y, which leaves esp_app_desc_t.version and project_name empty.
    assert values["CONFIG_APP_EXCLUDE_PROJECT_VER_VAR"] == "n"
    assert values["CONFIG_APP_EXCLUDE_PROJECT_NAME_VAR"] == "n"


def test_partition_table_fits_the_configured_flash():
    table = partitions.load(os.path.join(ROOT, "partitions.csv"), flash_size=4 * 1024 * 1024)
    assert max(p.end for p in table) == 4 * 1024 * 1024


def test_manifest_includes_the_port_manifest_and_freezes_lib():
    manifest = read("manifest.py")
    assert 'include("$(PORT_DIR)/boards/manifest.py")' in manifest
    assert 'require("umqtt.simple")' in manifest
    base = re.search(r'package\("ota", base_path="\$\(BOARD_DIR\)/([^"]+)"\)', manifest).group(1)
    lib = os.path.normpath(os.path.join(BOARD, base))
    assert lib == os.path.join(ROOT, "lib") and os.path.exists(os.path.join(lib, "ota", "__init__.py"))


def run_make(target, *args, **env):
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}  # no IDF_PATH, no PORT
    clean.update(env)
    return subprocess.run(["make", "-s", "-C", ROOT, target] + list(args), env=clean,
                          capture_output=True, text=True, timeout=60)


def test_make_firmware_without_idf_path_says_so():
    run = run_make("firmware", "VERSION=1.0.1")
    assert run.returncode != 0
    assert "make firmware: IDF_PATH is not set: export ESP-IDF v5.x (. $IDF_PATH/export.sh)" in run.stderr


def fake_idf(tmp_path):
    # An ESP-IDF checkout (IDF_PATH) and an idf.py on PATH, as far as firmware/build.sh looks before
    # it needs MicroPython: (IDF_PATH, the folder to put on PATH).
    idf = tmp_path / "esp-idf"
    (idf / "tools").mkdir(parents=True)
    (idf / "tools" / "idf.py").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "idf.py").write_text("#!/bin/sh\n")
    (bin_dir / "idf.py").chmod(0o755)
    return idf, bin_dir


def test_make_firmware_without_micropython_dir_says_so(tmp_path):
    idf, bin_dir = fake_idf(tmp_path)
    run = run_make("firmware", "VERSION=1.0.1", IDF_PATH=str(idf), PATH="%s:/usr/bin:/bin" % bin_dir)
    assert run.returncode != 0 and "make firmware: MICROPYTHON_DIR is not set" in run.stderr


def test_make_flash_and_deploy_without_port_say_so():
    for target in ("flash", "deploy", "provision"):
        run = run_make(target)
        assert run.returncode != 0
        assert "make %s: PORT is not set" % target in run.stderr


def test_make_firmware_refuses_a_checkout_of_another_release(tmp_path):
    # v1.24.x, for one, cannot freeze our viper module for RISC-V: a checkout at another tag stops early.
    idf, bin_dir = fake_idf(tmp_path)
    mp = tmp_path / "micropython"
    (mp / "ports" / "esp32").mkdir(parents=True)
    (mp / "ports" / "esp32" / "README.md").write_text("x\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(mp)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"], ["tag", "v1.24.1"]):
        subprocess.run(git + args, check=True, capture_output=True)
    run = run_make("firmware", "VERSION=1.0.1", IDF_PATH=str(idf), MICROPYTHON_DIR=str(mp),
                   PATH="%s:/usr/bin:/bin" % bin_dir)
    assert run.returncode != 0
    assert "make firmware: MICROPYTHON_DIR is at v1.24.1, the board is for v1.28.0" in run.stderr
