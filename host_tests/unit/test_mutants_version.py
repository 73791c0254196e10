"""ota.version.compare at the corners of its rules (pinned after `make mutate`; test_image_version has
the main order). Pre-release order follows semver 2.0.0 §11: numeric identifiers before alphanumeric
ones, identifiers compared one by one, a shorter list of equal identifiers first. CPython."""
import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota.errors import OtaError
from ota.version import compare


@pytest.mark.parametrize("low, high", [
    ("1", "1.1"),  # trailing zeros are dropped, other trailing numbers are not
    ("1.0.0-a", "1.0.0-b"),  # the whole pre-release counts, first letter included
    ("1.0.0-1", "1.0.0-a"),  # numeric before alphanumeric
    ("1.0.0-rc.1", "1.0.0-rc.a"),
    ("1.0.0-rc", "1.0.0-rc.1"),  # fewer identifiers first
    ("1.0.0-rc9", "1.0.0-rc10"),  # digit runs as numbers
    ("1.0.0-rc1a", "1.0.0-rc1b"),  # the run after the digits counts
    ("1.0.0-9", "1.0.0-10"),
    ("1.0.0-x.9", "1.0.0-x.10"),
    ("0.9.9", "1"),
    ("1.0.0-rc-1", "1.0.0"),  # a hyphen inside the pre-release (semver allows it): the first one splits
    ("1.0.0-rc-1", "1.0.0-rc-2"),
])
def test_order_at_the_corners(low, high):
    assert compare(low, high) == -1 and compare(high, low) == 1


@pytest.mark.parametrize("a, b", [("1", "1.0"), ("0", "0.0.0"), ("1.0-rc1", "1.0.0-rc1"), ("1.2+a", "1.2+b"),
                                  ("v1.0.0-rc.1", "1-rc.1"), ("1.0.0-rc1+b2", "1.0.0-rc1")])
def test_equal_spellings(a, b):
    assert compare(a, b) == 0 and compare(b, a) == 0


@pytest.mark.parametrize("text", ["x1.2", "1.2x", "+1", "1.+2", ".1", "1.2.3.", "1 .2", "vv1"])
def test_not_a_version(text):
    with pytest.raises(OtaError) as e:
        compare(text, "1.0")
    assert e.value.reason == "bad_version"
    with pytest.raises(OtaError):
        compare("1.0", text)


# Our pre-release rule (docs/DESIGN.md, "Version order"), where it parts from semver 2.0.0 §11: a
# pre-release is cut into runs at each dot AND between letters and digits, so "rc2" < "rc10" (semver
# compares "rc10" and "rc2" as one identifier each, by ASCII: "rc10" first). The price, chosen and
# pinned here: a dot between a letter run and a digit run does not count, and a digit run is a number,
# so "rc.1", "rc1" and "rc01" are one version (semver orders "rc.1" < "rc1" and forbids "01").
# The device answers same_version for them, and `otactl release` refuses the second spelling
# (version_exists) instead of publishing two names for one place in the order.
@pytest.mark.parametrize("a, b", [("1.0.0-rc.1", "1.0.0-rc1"), ("1.0.0-rc01", "1.0.0-rc1"),
                                  ("1.0.0-rc.01", "1.0.0-rc1"), ("1.0.0-1.a", "1.0.0-1a")])
def test_dots_between_letters_and_digits_do_not_count(a, b):
    assert compare(a, b) == 0 and compare(b, a) == 0


def test_dots_between_runs_of_one_kind_still_count():
    # "a.b" is two letter runs, "ab" one: the rule above is no licence to drop every dot.
    assert compare("1.0.0-a.b", "1.0.0-ab") == -1 and compare("1.0.0-ab", "1.0.0-a.b") == 1
    assert compare("1.0.0-1.2", "1.0.0-12") == -1
