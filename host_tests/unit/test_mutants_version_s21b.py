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


def test_an_empty_pre_release_is_none():
    # "1.0.0-" parses to the core and an empty pre-release, which counts as none (session 19 listed
    # `_parse__mutmut_18`, the default pre-release None instead of "", as equivalent: it is not here,
    # where one side's "" from the dash meets the other's default).
    assert version.compare("1.0.0-", "1.0.0") == 0 and version.compare("1.0.0", "1.0.0-") == 0
    assert version.compare("1.0.0-", "1.0.0-rc1") == 1


def test_build_metadata_is_everything_after_the_first_plus():
    # DESIGN.md: build metadata (+...) does not count, whatever it holds (session 19 left
    # `_parse__mutmut_13`, rfind("+"), unpinned: it refuses this version).
    assert version.compare("1.2.0+a+b", "1.2.0") == 0 and version.compare("1.2.0-rc1+a+b", "1.2.0-rc1") == 0
