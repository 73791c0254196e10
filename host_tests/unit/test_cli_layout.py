"""otactl's one error path and its edge with the dev kit, and `make sim`'s device without a bound.

- An error is printed after everything the command printed: stdout is flushed first (as mpremote
  does), so a pipe or a log shows the rows of `image inspect` and then why it failed, never the
  other way round.
- Without the dev kit (an installed otactl), `demo`, `sim` and `image build` say where it is, with a
  stable reason code (devkit_missing); the operator's commands never need it.
- The simulated device a person watches (`make sim`) boots as often as it resets; the tests' devices
  keep their bound.
"""
import os
import subprocess
import sys

import pytest

from devkit import images
from otactl import cli
from paths import LIB, ROOT


def test_the_error_comes_after_what_the_command_printed(tmp_path):
    bad = tmp_path / "s3.bin"
    bad.write_bytes(images.with_chip_id(images.build_image("1.0.1"), "esp32s3"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + LIB)
    env.pop("PYTHONUNBUFFERED", None)  # stdout block-buffered into a pipe, as for most users
    # one pipe for both: what arrives first is what was written first
    out = subprocess.run([sys.executable, "-m", "otactl", "image", "inspect", str(bad)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, cwd=str(tmp_path), timeout=120)
    lines = out.stdout.splitlines()
    assert out.returncode == 1
    assert lines[0].startswith(str(bad)) and any("FAIL  chip" in line for line in lines), lines
    assert lines[-1].startswith("otactl: wrong_chip: "), lines


@pytest.mark.parametrize("argv", [["demo"], ["sim"], ["image", "build", "--version", "1.0.1", "--out", "x.bin"]])
def test_without_the_dev_kit_its_commands_say_where_it_is(argv, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m == "devkit" or m.startswith("devkit.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "devkit", None)  # what an installed otactl sees: no such package
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("otactl: devkit_missing: ") and "make demo" in err, err
    assert not (tmp_path / "x.bin").exists()


def test_an_operator_command_runs_without_the_dev_kit(monkeypatch, capsys, tmp_path):
    image = tmp_path / "fw.bin"
    image.write_bytes(images.build_image("1.0.1"))
    monkeypatch.setitem(sys.modules, "devkit", None)
    assert cli.main(["image", "inspect", str(image)]) == 0
    assert "the device would accept this image" in capsys.readouterr().out


def test_the_watched_device_has_no_boot_bound_and_the_tests_devices_keep_theirs(tmp_path, monkeypatch):
    from sim.runner import Device

    def loop_of(max_boots, stop_after):
        device = Device(str(tmp_path / "dev"), max_boots=max_boots)
        boots = []

        def boot_once():  # a device that resets at once, every time
            boots.append(1)
            if len(boots) >= stop_after:
                device._stopping = True
            return "reset"

        monkeypatch.setattr(device, "_boot_once", boot_once)
        device.start()
        return device.wait(timeout=30), len(boots)

    assert loop_of(20, stop_after=100) == ("max_boots", 20)
    assert loop_of(None, stop_after=100) == ("stopped", 100)  # `make sim`: only a stop ends it

