# lib/ota/url.py under CPython: splitting download URLs and resolving redirect Locations.

import pytest


from ota import url
from ota.errors import OtaError


@pytest.mark.parametrize("text,expected", [
    ("https://example.com/fw.bin", ("https", "example.com", 443, "/fw.bin")),
    ("http://example.com", ("http", "example.com", 80, "/")),
    ("HTTPS://Example.COM:8443/A/b?x=1&y=2#frag", ("https", "example.com", 8443, "/A/b?x=1&y=2")),
    ("https://h?q=1", ("https", "h", 443, "/?q=1")),
    ("https://127.0.0.1:4443/x", ("https", "127.0.0.1", 4443, "/x")),
    ("https://[::1]/x", ("https", "::1", 443, "/x")),
    ("https://[2001:DB8::1]:8443/x", ("https", "2001:db8::1", 8443, "/x")),
    ("https://objects.githubusercontent.com/a%2Fb?X-Amz-Signature=ab_c-d.e", (
        "https", "objects.githubusercontent.com", 443, "/a%2Fb?X-Amz-Signature=ab_c-d.e")),
])
def test_split(text, expected):
    assert url.split(text) == expected


@pytest.mark.parametrize("text", [
    "", "example.com/fw.bin", "ftp://example.com/x", "https://", "https:///x", "https://:443/x",
    "https://user:pw@example.com/x", "https://exa mple.com/x", "https://example.com/a b",
    "https://example.com/x\r\nHost: evil", "https://example.com:0/x", "https://example.com:65536/",
    "https://example.com:80a/", "https://example.com:/x", "https://[::1/x", "https://[::1]x/",
    "https://[zz::1]/", "https://-bad.com/", "https://a..b/", "https://ex%61mple.com/",
    "https://example.com\t/x", 12,
])
def test_split_rejects(text):
    with pytest.raises(OtaError) as info:
        url.split(text)
    assert info.value.reason == "bad_url"


@pytest.mark.parametrize("location,expected", [
    ("https://other.example/f", "https://other.example/f"),
    ("http://other.example/f", "http://other.example/f"),
    ("//cdn.example/f?sig=1", "https://cdn.example/f?sig=1"),
    ("/abs/f", "https://h.example:8443/abs/f"),
    ("/abs/../f", "https://h.example:8443/f"),
    ("rel.bin", "https://h.example:8443/dir/sub/rel.bin"),
    ("../up.bin", "https://h.example:8443/dir/up.bin"),
    ("./same.bin?x=http://y", "https://h.example:8443/dir/sub/same.bin?x=http://y"),
    ("?v=2", "https://h.example:8443/dir/sub/file?v=2"),
    ("../../../../top", "https://h.example:8443/top"),
])
def test_join(location, expected):
    assert url.join("https://h.example:8443/dir/sub/file?v=1", location) == expected


def test_join_keeps_ipv6_brackets_and_default_port():
    assert url.join("https://[::1]/a/b", "/c") == "https://[::1]/c"
    assert url.join("https://h:443/a", "b") == "https://h/b"


def test_join_rejects_empty_location():
    with pytest.raises(OtaError):
        url.join("https://h/a", "  ")


def test_netloc():
    assert url.netloc("https", "h", 443) == "h"
    assert url.netloc("https", "h", 80) == "h:80"
    assert url.netloc("http", "::1", 8080) == "[::1]:8080"
