"""ota.url at the corners of RFC 3986 (pinned after `make mutate`; test_url has the main cases):
where "://", "#", "?" and "]" occur twice, ports at the ends of their range, an origin, and redirect
Locations resolved as in RFC 3986 §5.2 (remove_dot_segments §5.2.4). CPython."""
import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import url
from ota.errors import OtaError


@pytest.mark.parametrize("text, expected", [
    ("https://h/r?to=http://x/y", ("https", "h", 443, "/r?to=http://x/y")),  # the first "://" ends the scheme
    ("https://h/a#b#c", ("https", "h", 443, "/a")),  # the first "#" starts the fragment
    ("https://h:1/", ("https", "h", 1, "/")),
    ("https://h:65535/", ("https", "h", 65535, "/")),
    ("https://h:00080/", ("https", "h", 80, "/")),  # five digits, leading zeros
    ("https://[::1]:8443", ("https", "::1", 8443, "/")),
])
def test_split_corners(text, expected):
    assert url.split(text) == expected


@pytest.mark.parametrize("text", [
    "https://h:000080/",  # six digits
    "https://h:8X/", "https://h:0/", "https://h:65536/",
    "https://[abc]/x",  # hex letters but no colon: not an IPv6 literal
    "https://[1.2.3.4]/x",
    "https://[::1]:99999/x", "https://[::1]:/x", "https://[::1]x/",
    "https://-h/", "https://.h/", "https://a..b/",
])
def test_split_refuses(text):
    with pytest.raises(OtaError) as e:
        url.split(text)
    assert e.value.reason == "bad_url" and text[:20] in e.value.detail


def test_origin_is_scheme_host_port_only():
    assert url.origin("https://h:8443") == ("https", "h", 8443)
    assert url.origin("https://h/") == ("https", "h", 443)
    assert url.origin("http://h") == ("http", "h", 80)
    for text in ("https://h/x", "https://h?q=1", "https://h//", "https://h/#"):
        with pytest.raises(OtaError) as e:
            url.origin(text)
        assert e.value.reason == "bad_url" and text in e.value.detail, text


BASE = "https://h/d/f?q=a/b?c"


@pytest.mark.parametrize("location, expected", [
    ("https://a/b?u=http://c", "https://a/b?u=http://c"),  # absolute, "://" again in its query
    ("h://x", "h://x"),  # any scheme of one letter or more is absolute (split refuses it later)
    ("://x", "https://h/d/://x"),  # no scheme: a relative path
    ("://a://b", "https://h/d/://a://b"),  # the first "://" decides, not a later one
    ("/x://y", "https://h/x://y"),  # "://" after the first "/": a path
    ("g", "https://h/d/g"),  # the base's query ends at its first "?"
    ("#frag", "https://h/d/f#frag"),
    ("?x", "https://h/d/f?x"),
    ("/a/b/..", "https://h/a/"),  # a final ".." or "." leaves the directory (RFC 3986 §5.2.4)
    ("/a/b/.", "https://h/a/b/"),
    ("/a?x/..?y", "https://h/a?x/..?y"),  # dots after the first "?" are query
    ("/a#x/..?y", "https://h/a#x/..?y"),
])
def test_join_corners(location, expected):
    assert url.join(BASE, location) == expected


def test_an_empty_location_is_bad_url():
    for location in ("", "   "):
        with pytest.raises(OtaError) as e:
            url.join(BASE, location)
        assert e.value.reason == "bad_url"


# ---- session 21: what the full mutation run left ------------------------------------------------

def test_a_refusal_quotes_the_first_80_characters_of_the_url():
    # The detail goes into the state message: a 500-character URL must not make it 500 bytes longer.
    long_url = "ftp://host/" + "a" * 500
    with pytest.raises(OtaError) as err:
        url.split(long_url)
    assert err.value.detail == "scheme not http(s): " + long_url[:80]


def test_dot_segments_after_a_capital_letter_are_removed_and_the_query_kept():
    # Only "?" and "#" end the path (RFC 3986 §3.3): every other character, whatever its case, is path.
    assert url.join("https://h/a/b", "/X/../fw.bin") == "https://h/fw.bin"
    assert url.join("https://h/a/b", "X/./Y/../fw.bin?X=1") == "https://h/a/X/fw.bin?X=1"


def test_a_location_with_a_scheme_is_absolute_whatever_its_letters():
    # RFC 3986 §4.3: a scheme makes the reference absolute. It is returned as it is, and split()
    # refuses a scheme that is not http(s) on the next hop; it is never taken as a path on the old host.
    assert url.join("https://h/a/b", "HTTPX://other/fw.bin") == "HTTPX://other/fw.bin"
    with pytest.raises(OtaError):
        url.split(url.join("https://h/a/b", "HTTPX://other/fw.bin"))
