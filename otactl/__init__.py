"""otactl: the operator's side of the fleet (the `otactl` console script; otactl/cli.py).

The host tools use the device's own modules (lib/ota: the trigger parser, image checks, version
comparison, signing's canonical form) as they are, never a copy: lib/ goes on sys.path once, here,
before any otactl module imports `ota`."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(REPO, "lib")  # holds only the `ota` package: nothing of the stdlib is shadowed
if LIB not in sys.path:
    sys.path.insert(0, LIB)
