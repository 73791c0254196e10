"""otactl: the operator's side of the fleet (the `otactl` console script; otactl/cli.py).

The host tools use the device's own package `ota` (lib/ota: the trigger parser, image checks, version
comparison, signing's canonical form, the error type) as it is, never a copy. Installed (`pip install
.`), `ota` is a package of its own beside `otactl`. Run from a checkout, lib/ goes on sys.path once,
here, before any otactl module imports `ota`.

otactl imports `ota` and nothing else of this repository (host_tests/unit/test_layout.py checks it): the
simulator and the dev kit (devkit/: demo, simulated devices, test servers) build on otactl, never the
other way round.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(REPO, "lib")  # holds only the `ota` package: nothing of the stdlib is shadowed
if os.path.isdir(os.path.join(LIB, "ota")) and LIB not in sys.path:
    sys.path.insert(0, LIB)
