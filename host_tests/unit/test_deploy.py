"""otactl.deploy and otactl provision: the plans, checked without a board."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from otactl import cmd_device, deploy, partitions
from ota.errors import OtaError

from paths import ROOT
PORT = "/dev/ttyACM0"


def lib_modules():
    return sorted(os.path.relpath(os.path.join(top, f), ROOT)
                  for top, _, files in os.walk(os.path.join(ROOT, "lib")) for f in files if f.endswith(".py"))


def test_deploy_plan_compiles_every_lib_module():
    plan = deploy.deploy_plan(ROOT, PORT)
    assert [src for src, _ in plan["compile"]] == lib_modules()
    for src, out in plan["compile"]:
        assert out == os.path.join("build", "deploy", src[:-3] + ".mpy")
    remote = [r for _, r in plan["copy"]]
    assert ":lib/ota/config.mpy" in remote and ":boot.py" in remote and ":main.py" in remote


def test_deploy_plan_mpremote_commands():
    plan = deploy.deploy_plan(ROOT, PORT)
    mpremote = [c for c in plan["commands"] if c[0] == "mpremote"]
    assert mpremote == [
        ["mpremote", "connect", PORT, "fs", "cp", "-r", os.path.join("build", "deploy", "lib"), ":"],
        ["mpremote", "connect", PORT, "fs", "cp", "boot.py", "main.py", ":"],
        ["mpremote", "connect", PORT, "reset"],
    ]
    compile_commands = [c for c in plan["commands"] if c[0] != "mpremote"]
    assert len(compile_commands) == len(lib_modules())
    assert all(c[0].endswith("mpy-cross") and c[1] == "-march=rv32imc" for c in compile_commands)


def test_deploy_plan_without_frozen_umqtt_installs_it():
    plan = deploy.deploy_plan(ROOT, PORT, frozen=False)
    assert ["mpremote", "connect", PORT, "mip", "install", "umqtt.simple"] in plan["commands"]


def test_deploy_dry_run_prints_the_plan():
    run = subprocess.run([sys.executable, "-m", "otactl", "deploy", "--port", PORT, "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for module in lib_modules():
        assert "# compile %s -> " % module in run.stdout
    assert "mpremote connect %s fs cp boot.py main.py :" % PORT in run.stdout


def test_flash_dry_run_through_the_cli_prints_the_esptool_command():
    # what `make flash` runs: the command table's `flash`, one esptool call, nothing executed
    run = subprocess.run([sys.executable, "-m", "otactl", "flash", "--port", PORT, "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    esptool = [line for line in run.stdout.splitlines() if not line.startswith("#")]
    assert len(esptool) == 1 and " --chip esp32c3 --port %s " % PORT in esptool[0]
    assert "0x10000 build/firmware/micropython.bin" in esptool[0]
    # the venv's pinned esptool, run as a module of otactl's own Python: never an esptool from PATH
    assert esptool[0].startswith("%s -m esptool " % sys.executable)


def test_flash_plan_offsets_come_from_partitions_csv():
    plan = deploy.flash_plan(ROOT, PORT)
    assert [(hex(o), os.path.basename(p)) for o, p in plan["write"]][:4] == [
        ("0x0", "bootloader.bin"), ("0x8000", "partition-table.bin"), ("0xd000", "otadata-blank.bin"),
        ("0x10000", "micropython.bin")]
    assert plan["generate"][os.path.join("build", "firmware", "otadata-blank.bin")] == b"\xff" * 0x2000
    command = plan["commands"][0]
    # write_flash: the one spelling esptool v4 and v5 both accept (v5 also takes write-flash; v4 does not)
    assert command[:10] == [sys.executable, "-m", "esptool", "--chip", "esp32c3", "--port", PORT,
                            "--baud", "460800", "write_flash"]
    assert "firmware.bin" not in " ".join(command)  # the merged image never goes to an app slot


def test_first_flash_blanks_the_filesystem_region_read_from_the_table():
    # Old stock-MicroPython data there makes the first boot loop in inisetup.py ("filesystem appears to
    # be corrupted"); the region comes from partitions.csv (vfs at 0x3B0000, 0x50000 bytes), not a constant.
    table = partitions.load(os.path.join(ROOT, "partitions.csv"))
    vfs = [p for p in table if p.label == "vfs"][0]
    plan = deploy.flash_plan(ROOT, PORT)
    blank = os.path.join("build", "firmware", "vfs-blank.bin")
    assert (vfs.offset, blank) in plan["write"]
    assert plan["generate"][blank] == b"\xff" * vfs.size
    assert (vfs.offset, vfs.offset + vfs.size) == (0x3B0000, 0x400000)
    command = plan["commands"][0]
    assert command[command.index("0x%x" % vfs.offset) + 1] == blank


def test_first_flash_blank_follows_a_moved_filesystem(tmp_path):
    csv = open(os.path.join(ROOT, "partitions.csv")).read().replace(
        "vfs,        data, fat,      0x3B0000, 0x50000,",
        "vfs,        data, fat,      0x3B0000, 0x20000,\nspare,      data, 0x99,     0x3D0000, 0x30000,")
    (tmp_path / "partitions.csv").write_text(csv)
    plan = deploy.flash_plan(str(tmp_path), PORT)
    assert plan["generate"][os.path.join("build", "firmware", "vfs-blank.bin")] == b"\xff" * 0x20000


def test_esptool_missing_is_named(monkeypatch):
    monkeypatch.setattr(deploy.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OtaError) as err:
        deploy.flash_plan(ROOT, PORT)
    assert err.value.reason == "missing_dependency" and "make venv" in err.value.detail


def test_flash_without_a_build_says_what_to_run(tmp_path):
    for name in ("partitions.csv",):
        (tmp_path / name).write_text(open(os.path.join(ROOT, name)).read())
    with pytest.raises(OtaError) as err:
        deploy.run_plan(str(tmp_path), deploy.flash_plan(str(tmp_path), PORT))
    assert err.value.reason == "missing_build" and "make firmware" in err.value.detail


def provision_args(tmp_path, config, **extra):
    path = tmp_path / "my.json"
    path.write_text(json.dumps(config))
    values = dict(repo=ROOT, port=PORT, config=str(path), ca=None, pubkey=None, dry_run=True)
    values.update(extra)
    return SimpleNamespace(**values)


GOOD = {"wifi": {"ssid": "lab", "password": "longenough"}, "mqtt": {"host": "broker.lan"}}


def test_provision_refuses_a_config_the_device_would_refuse(tmp_path, capsys):
    bad = dict(GOOD, ota={"chunk_size": 5000})
    with pytest.raises(OtaError) as err:
        cmd_device.do_provision(provision_args(tmp_path, bad))
    assert str(err.value) == "bad_config: ota.chunk_size: must be a multiple of 4096, got 5000"
    assert "mpremote" not in capsys.readouterr().out


def test_provision_dry_run_prints_mpremote_commands_and_masks_secrets(tmp_path, capsys):
    ca = tmp_path / "ca.der"
    ca.write_bytes(b"\x30\x82\x01\x00")
    key = tmp_path / "key.hex"
    key.write_text("ab" * 32 + "\n")
    assert cmd_device.do_provision(provision_args(tmp_path, GOOD, ca=str(ca), pubkey=str(key))) == 0
    out = capsys.readouterr().out
    assert "mpremote connect %s fs cp '<config.json>' :config.json" % PORT in out
    assert "mpremote connect %s fs cp %s :ca.der" % (PORT, ca) in out
    assert "longenough" not in out and '"password": "***"' in out
    plan = cmd_device.provision_plan(ROOT, PORT, str(tmp_path / "my.json"), str(ca), str(key))
    assert json.loads(plan["config"])["ota"]["signing_pubkey"] == "ab" * 32
    # the config and the CA are read at boot: the last command resets the board
    assert plan["commands"][-1] == ["mpremote", "connect", PORT, "reset"]
    assert out.rstrip().splitlines()[-1].endswith("mpremote connect %s reset" % PORT)


def test_provision_rejects_a_pem_ca(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(OtaError) as err:
        cmd_device.do_provision(provision_args(tmp_path, GOOD, ca=str(pem)))
    assert err.value.reason == "bad_config" and "-outform der" in err.value.detail


def test_provision_from_make_exits_1_with_the_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dict(GOOD, mqtt={"host": "b", "port": 0})))
    run = subprocess.run([sys.executable, "-m", "otactl", "provision", "--port", PORT, "--config",
                          str(path), "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip() == "otactl: bad_config: mqtt.port: must be 1..65535, got 0"
