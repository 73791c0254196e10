"""ota.url: DEL (0x7f) is a control character like those below 0x20 (RFC 3986 allows neither in a
URL): refused wherever it sits, the path included, where no other check would see it (a redirect's
Location is split() before the next request line is built). Session 21's split__mutmut_14 compared
each character with "XX\\x7fXX" and let it through."""
import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import url
from ota.errors import OtaError


@pytest.mark.parametrize("text", [
    "https://example.com/a\x7fb",
    "https://example.com/x?q=\x7f",
    "https://example.com\x7f/x",
])
def test_del_is_refused_as_a_control_character(text):
    with pytest.raises(OtaError) as e:
        url.split(text)
    assert (e.value.reason, e.value.detail) == ("bad_url", "whitespace or control character: " + text)

