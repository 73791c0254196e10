"""ota.version, what the session-21 run left: a pre-release that starts with a dot. Dots only split
runs (docs/DESIGN.md, "Version order": "rc.1" == "rc1"), so a leading one adds nothing: "-.a" is
"-a". Session 19 listed `_tokens__mutmut_3` (the first run starting as "XXXX") as equivalent; it is
not for this input: the leading dot flushes "XXXX" as a token of its own. CPython."""
import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import version


def test_a_leading_dot_in_the_pre_release_adds_nothing():
    assert version.compare("1.0.0-.a", "1.0.0-a") == 0
    assert version.compare("1.0.0-a", "1.0.0-.a") == 0
    assert version.compare("1.0.0-.a", "1.0.0-b") == -1
