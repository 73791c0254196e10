"""`pip install .` gives an operator a working otactl, away from any checkout (issue 11).

The wheel is built from a copy of what pyproject.toml ships (so the build leaves nothing in the
checkout), installed with its declared dependencies into a fresh venv in a temporary folder, and the
installed `otactl` runs there with the checkout out of reach: `image inspect` on an image, `release`
into a folder, `trigger --help`; `ota` is the installed copy of lib/ota; `otactl demo` says where the
dev kit is (devkit_missing). About a minute (the dependencies come from pip's usual sources).
"""
import json
import os
import shutil
import subprocess
import sys
import venv

import pytest

from devkit import images
from paths import ROOT

pytestmark = pytest.mark.wheel

# What the build needs of the checkout: pyproject.toml's packages, data-files and readme.
SHIPPED = ("pyproject.toml", "README.md", "partitions.csv", "otactl", os.path.join("lib", "ota"))


def _run(argv, cwd, env, timeout=600):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, a work folder outside the checkout, the environment to run in)."""
    top = tmp_path_factory.mktemp("wheel")
    assert not str(top).startswith(ROOT + os.sep)
    source = top / "source"
    for name in SHIPPED:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            shutil.copy(src, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    wheels = top / "wheels"
    # pip's build isolation installs pyproject.toml's build requirements (setuptools) the usual way
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)]
    out = _run(build, cwd=str(top), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = wheels.glob("otactl-*.whl")
    target = top / "venv"
    venv.EnvBuilder(with_pip=True).create(str(target))
    bindir = target / "bin"
    out = _run([str(bindir / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=str(top), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    work = top / "work"
    work.mkdir()
    return bindir, work, env


def test_the_wheel_ships_otactl_and_the_device_package_only(installed):
    bindir, work, env = installed
    out = _run([str(bindir / "python"), "-c", "import json, ota.trigger, otactl, importlib.util as u; "
                "print(json.dumps([ota.trigger.__file__, otactl.__file__] + "
                "[bool(u.find_spec(n)) for n in ('devkit', 'sim', 'harness', 'host_tests')]))"],
               cwd=str(work), env=env)
    assert out.returncode == 0, out.stderr
    ota_file, otactl_file, *kit = json.loads(out.stdout)
    venv_dir = str(bindir.parent)
    assert ota_file.startswith(venv_dir) and otactl_file.startswith(venv_dir), (ota_file, otactl_file)
    assert kit == [False, False, False, False]


def test_installed_otactl_inspects_and_releases_an_image(installed):
    bindir, work, env = installed
    image = work / "micropython.bin"
    image.write_bytes(images.build_image("1.2.3", [("main.py", b"print('1.2.3')\n")]))
    otactl = str(bindir / "otactl")

    out = _run([otactl, "image", "inspect", str(image), "--chip-rev", "4"], cwd=str(work), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the device would accept this image" in out.stdout
    # the slot size came from the partition table installed with otactl, not from a checkout
    assert "of 1900544 bytes" in out.stdout

    out = _run([otactl, "release", str(image), "--dir", "releases", "--base-url", "https://fw.example/ota/"],
               cwd=str(work), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = json.loads((work / "releases" / "firmware-v1.2.3.json").read_text())
    assert manifest["version"] == "1.2.3" and manifest["url"] == "https://fw.example/ota/firmware-v1.2.3.bin"
    assert (work / "releases" / "firmware-v1.2.3.bin").read_bytes() == image.read_bytes()

    # a refusal comes with the device's reason code and otactl's exit status
    bad = work / "esp32s3.bin"
    bad.write_bytes(images.with_chip_id(image.read_bytes(), "esp32s3"))
    out = _run([otactl, "release", str(bad), "--dir", "releases"], cwd=str(work), env=env)
    assert out.returncode == 1 and out.stderr.startswith("otactl: wrong_chip: "), out.stderr


def test_installed_otactl_has_every_operator_command_and_points_to_the_dev_kit(installed):
    bindir, work, env = installed
    otactl = str(bindir / "otactl")
    for command in ("trigger", "status", "rollout", "revert", "keys", "serve", "flash", "provision", "deploy"):
        out = _run([otactl, command, "--help"], cwd=str(work), env=env)
        assert out.returncode == 0 and out.stdout.startswith("usage: otactl " + command), out.stderr
    out = _run([otactl, "demo"], cwd=str(work), env=env)
    assert out.returncode == 1 and out.stderr.startswith("otactl: devkit_missing: "), out.stderr
    assert "make demo" in out.stderr
