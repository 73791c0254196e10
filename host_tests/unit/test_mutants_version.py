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
