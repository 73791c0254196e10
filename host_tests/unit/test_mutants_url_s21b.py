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



# Each refusal names its rule, which the operator reads on the state topic; session 19 listed these
# mutants as equivalent because the reason (bad_url) is the same, but each one names another rule
# (split__mutmut_25, _26, _49, _50, _57, _58, _83, _135).
@pytest.mark.parametrize("text, why", [
    ("://x/a", "no scheme"),  # "://" at 0
    ("h://x/a", "scheme not http(s)"),  # a one-letter scheme
    ("https://#@x", "bad host"),  # a "#" right after "://": the "@" is in the fragment
    ("https:///@x/a", "bad host"),  # a "/" right after "://": the "@" is in the path
    ("https://?@x/a", "bad host"),  # a "?" right after "://": the "@" is in the query
    ("https://[::1]]/a", "junk after IPv6 literal"),  # the first "]" closes the literal
    ("https://h:1:2/a", "bad port"),  # the first ":" starts the port
])
def test_each_refusal_names_its_rule(text, why):
    with pytest.raises(OtaError) as e:
        url.split(text)
    assert (e.value.reason, e.value.detail) == ("bad_url", why + ": " + text)


@pytest.mark.parametrize("text", ["https://X", "https://X/", "https://XX"])
def test_an_origin_whose_host_is_written_in_capital_x_is_an_origin(text):
    # hosts compare case-insensitively; session 19 listed origin__mutmut_9 (rstrip("XX/XX")) as
    # equivalent, but on a host of capital X's alone it strips the host too and refuses the origin
    assert url.origin(text) == ("https", text[8:].rstrip("/").lower(), 443)
