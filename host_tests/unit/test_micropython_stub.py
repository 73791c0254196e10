# The `micropython` module, both ways the device package meets it off the device. Under pytest the one
# conftest installs a stub, so the modules that say `from micropython import const` take it as on the
# device; in otactl (the operator's CPython, no stub) each of them falls back to its own const(). The
# fallback stays for that reason (conftest.py says why); this pins both.
import importlib
import os
import re
import subprocess
import sys

from paths import LIB

# Found, not listed: a module that starts to use const() is covered without editing this file.
USERS = sorted("ota." + name[:-3] for name in os.listdir(os.path.join(LIB, "ota")) if name.endswith(".py")
               and re.search(r"^\s*from micropython import const\b", open(os.path.join(LIB, "ota", name)).read(), re.M))


def test_the_device_modules_that_use_const_are_found():
    assert len(USERS) >= 8 and "ota.image" in USERS and "ota.writer" in USERS, USERS


def test_under_pytest_they_take_const_from_the_stub():
    stub = sys.modules["micropython"]
    for name in USERS:
        assert importlib.import_module(name).const is stub.const, name


def test_in_plain_cpython_they_fall_back_to_their_own_const():
    # A fresh interpreter as otactl runs it: no conftest, no stub, lib/ on sys.path.
    script = (
        "import importlib, sys\n"
        "sys.path.insert(0, %r)\n"
        "for name in %r:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.const.__module__ == name, name\n"
        "    assert module.const(7) == 7\n"
        "assert 'micropython' not in sys.modules\n"
        "from ota import image\n"
        "print(image.HEADER_BYTES)\n" % (LIB, USERS))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(0x100)
