# Setup on a fresh machine: a missing dependency is named, not a stack trace.
import os
import subprocess

from paths import ROOT as REPO


def test_missing_python_is_named():
    run = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHON="/nonexistent/python3"), timeout=60)
    assert run.returncode != 0
    assert "bootstrap: missing dependency: /nonexistent/python3" in run.stderr


def test_old_python_is_named(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'Python 3.8.0' && exit 0\nexit 1\n")
    fake.chmod(0o755)
    run = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHON=str(fake)), timeout=60)
    assert run.returncode != 0
    assert "missing dependency: Python >= 3.10 is required, found Python 3.8.0" in run.stderr


def test_a_pinned_package_with_a_wrong_hash_is_refused(tmp_path):
    pins = tmp_path / "pins.txt"
    pins.write_text("micropython-umqtt.simple 1.3.4 " + "0" * 64 + "\n")
    run = subprocess.run([os.path.join(REPO, ".venv", "bin", "python"), "scripts/fetch_mpy_packages.py",
                          str(pins), str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert "pinned " + "0" * 64 in run.stderr
