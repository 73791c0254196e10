"""lib/ota/version.py: the running version from the slot's app descriptor, and version order, on
CPython and on the real MicroPython."""
import os
import subprocess

import pytest

from paths import MICROPYTHON, ROOT

from devkit import images
from ota import version
from ota.errors import OtaError


ORDERED = ["0.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-rc1", "1.0.0-rc2", "1.0.0-rc10", "1.0.0",
           "1.0.1", "v1.2.0-rc1", "1.2.0", "1.10.0", "2"]
EQUAL = [("1.0", "1.0.0"), ("v1.2.3", "1.2.3"), ("1.2.3+build7", "1.2.3"), ("V2.0", "2.0.0")]
BAD = ["", "v", "abc", "1..2", "1.x", "1.2.", "-rc1"]


def test_order():
    for i, a in enumerate(ORDERED):
        for j, b in enumerate(ORDERED):
            want = (i > j) - (i < j)
            assert version.compare(a, b) == want, (a, b)


def test_equal_and_bad():
    for a, b in EQUAL:
        assert version.compare(a, b) == 0 and version.compare(b, a) == 0
    for bad in BAD:
        with pytest.raises(OtaError) as e:
            version.compare(bad, "1.0")
        assert e.value.reason == "bad_version"


class FakePartition:
    def __init__(self, blob):
        self.blob = blob

    def readblocks(self, block, buf):
        buf[:] = self.blob[block * 4096:block * 4096 + len(buf)]


def test_read_descriptor_from_a_slot():
    slot = FakePartition(images.build_image("1.4.2", project_name="switch") + b"\xff" * 4096)
    info = version.read_descriptor(slot)
    assert info["version"] == "1.4.2" and info["project_name"] == "switch"
    with pytest.raises(OtaError) as e:
        version.read_descriptor(FakePartition(images.bootloader_image()))
    assert e.value.reason == "not_app_image"


def test_same_answers_under_micropython(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("the MicroPython Unix port is not installed in .venv")
    script = tmp_path / "order.py"
    script.write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom ota import version\n"
        "o = %r\n"
        "print(all(version.compare(a, b) == (i > j) - (i < j)"
        " for i, a in enumerate(o) for j, b in enumerate(o)))\n"
        "print(all(version.compare(a, b) == 0 for a, b in %r))\n" % (os.path.join(ROOT, "lib"), ORDERED, EQUAL))
    run = subprocess.run([MICROPYTHON, str(script)], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["True", "True"], run.stdout + run.stderr
