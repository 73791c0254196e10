# The Makefile's own habits: `make help` names every target there is, and .PHONY names only targets
# there are (a stale .PHONY entry hides a typo: `make tset` would say "nothing to be done").
import re
import shutil
import subprocess

import pytest

from paths import ROOT

with open(ROOT + "/Makefile") as f:
    MAKEFILE = f.read()
TARGETS = set(re.findall(r"^([a-z][\w-]*):(?!=)", MAKEFILE, re.M))
PHONY = {name for line in re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M) for name in line.split()}


def test_the_makefile_is_read():
    assert {"help", "test", "demo", "lint", "faults"} <= TARGETS, TARGETS


def test_phony_names_only_targets_that_exist():
    assert PHONY - TARGETS == set()


def test_every_target_is_phony():
    # None of them makes a file of its name.
    assert TARGETS - PHONY == set()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_help_lists_every_target():
    out = subprocess.run(["make", "-s", "-C", ROOT, "help"], capture_output=True, text=True, timeout=30).stdout
    listed = set(re.findall(r"^make (\w[\w-]*)", out, re.M))
    assert listed == TARGETS, (TARGETS - listed, listed - TARGETS)
