# URL handling for the HTTPS client: just enough of RFC 3986 to split a download URL and to resolve
# a redirect's Location against it. Strict on purpose: the host goes into SNI and certificate checks,
# the path goes verbatim into the request line, so anything odd is refused rather than guessed at.
from ota.errors import OtaError

_DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-._"
_IPV6_CHARS = "0123456789abcdef:."


def _bad(url, why):
    return OtaError("bad_url", why + ": " + url[:80])


# split("https://Host:8443/a/b?q") -> ("https", "host", 8443, "/a/b?q")
# The host is lower-cased (hosts compare case-insensitively, e.g. for token_host); an IPv6
# literal is returned without its brackets. The fragment is dropped (never sent to a server).
# Raises OtaError("bad_url") for another scheme, user:password@, an empty or malformed host, a bad
# port, or any whitespace / control character (it would end up inside the request line).
def split(url):
    if not isinstance(url, str):
        raise OtaError("bad_url", "not a string")
    for ch in url:
        if ch <= " " or ch == "\x7f":
            raise _bad(url, "whitespace or control character")
    i = url.find("://")
    if i <= 0:
        raise _bad(url, "no scheme")
    scheme = url[:i].lower()
    if scheme not in _DEFAULT_PORTS:
        raise _bad(url, "scheme not http(s)")
    rest = url[i + 3 :]
    hash_at = rest.find("#")
    if hash_at >= 0:
        rest = rest[:hash_at]
    end = len(rest)
    for sep in "/?":
        j = rest.find(sep)
        if 0 <= j < end:
            end = j
    authority = rest[:end]
    path = rest[end:]
    if not path.startswith("/"):
        path = "/" + path
    if "@" in authority:
        raise _bad(url, "credentials in URL")
    port = _DEFAULT_PORTS[scheme]
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _bad(url, "unclosed IPv6 literal")
        host = authority[1:close].lower()
        after = authority[close + 1 :]
        if not host or ":" not in host or not _only(host, _IPV6_CHARS):
            raise _bad(url, "bad IPv6 literal")
        if after:
            if not after.startswith(":"):
                raise _bad(url, "junk after IPv6 literal")
            port = _port(url, after[1:])
    else:
        colon = authority.find(":")
        host = authority.lower()
        if colon >= 0:
            host = authority[:colon].lower()
            port = _port(url, authority[colon + 1 :])
        if not host or not _only(host, _HOST_CHARS) or host[0] in "-." or ".." in host:
            raise _bad(url, "bad host")
    return scheme, host, port, path


def _only(text, allowed):
    for ch in text:
        if ch not in allowed:
            return False
    return True


def _port(url, text):
    if not text or len(text) > 5 or not _only(text, "0123456789"):
        raise _bad(url, "bad port")
    port = int(text)
    if not 0 < port < 65536:
        raise _bad(url, "bad port")
    return port


# origin("https://Host:8443") -> ("https", "host", 8443): scheme, host and port, the scheme's default
# port when none is named. Raises OtaError("bad_url") for anything split() refuses, or a path or
# query after the authority (a trailing "/" is fine).
def origin(text):
    scheme, host, port, path = split(text)
    if path != "/" or text.rstrip("/").count("/") != 2:
        raise _bad(text, "an origin has no path or query")
    return scheme, host, port


# The authority as written in a URL and in the Host header: brackets around an IPv6 literal, the
# port only when it is not the scheme's default (some servers and signed URLs compare it verbatim).
def netloc(scheme, host, port):
    if ":" in host:
        host = "[" + host + "]"
    if port != _DEFAULT_PORTS[scheme]:
        return host + ":" + str(port)
    return host


# Resolve a redirect's Location against the URL that answered it: absolute (https://h/p),
# scheme-relative (//h/p), absolute-path (/p), query-only (?q) and relative (p, ../p) forms.
# Returns a URL string; split() it to validate. Raises OtaError("bad_url") if base is malformed
# or location is empty.
def join(base, location):
    location = location.strip()
    if not location:
        raise OtaError("bad_url", "empty Location")
    if location.find("://") > 0 and location.find("://") < _first_of(location, "/?#"):
        return location
    scheme, host, port, path = split(base)
    origin = scheme + "://" + netloc(scheme, host, port)
    if location.startswith("//"):
        return scheme + ":" + location
    if location.startswith("/"):
        return origin + _remove_dots(location)
    base_path = path
    query_at = base_path.find("?")
    if query_at >= 0:
        base_path = base_path[:query_at]
    if location.startswith("?") or location.startswith("#"):
        return origin + base_path + location
    directory = base_path[: base_path.rfind("/") + 1]
    return origin + _remove_dots(directory + location)


def _first_of(text, chars):
    first = len(text)
    for ch in chars:
        i = text.find(ch)
        if 0 <= i < first:
            first = i
    return first


# RFC 3986 5.2.4 for the path part ("/a/b/../c" -> "/a/c"); the query is left untouched.
def _remove_dots(path):
    query = ""
    cut = _first_of(path, "?#")
    if cut < len(path):
        path, query = path[:cut], path[cut:]
    out = []
    segments = path.split("/")
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out) + query
