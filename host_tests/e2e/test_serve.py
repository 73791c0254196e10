"""`otactl serve`: otactl's own firmware server (otactl/serve.py), not the dev kit's test server.

Over real TLS on loopback: a whole file and a resumed one (Range: what the device sends after a
drop), HEAD, 416 past the end, nothing outside the folder and no dot files, the operator's own
certificate, and the command itself: starts with a CA it makes, prints where, stops on SIGTERM.
"""
import hashlib
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from devkit.tls import make_pki
from otactl.serve import FileServer, parse_range
from paths import LIB, ROOT


def _get(url, cafile, headers=None, method="GET"):
    context = ssl.create_default_context(cafile=cafile)
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def served(tmp_path):
    pki = make_pki(str(tmp_path / "pki"))
    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(300_000)
    (www / "firmware-v1.0.1.bin").write_bytes(blob)
    (www / ".secret").write_bytes(b"no")
    (tmp_path / "outside.bin").write_bytes(b"outside")
    with FileServer(str(www), pki.server_cert, pki.server_key) as server:  # the operator's cert and key
        yield server, pki, blob


def test_a_whole_file_and_a_resumed_one(served):
    server, pki, blob = served
    status, headers, body = _get(server.url("firmware-v1.0.1.bin"), pki.ca_pem)
    assert status == 200 and body == blob and headers["Content-Length"] == str(len(blob))
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = _get(server.url("firmware-v1.0.1.bin"), pki.ca_pem, {"Range": "bytes=123456-"})
    assert status == 206 and body == blob[123456:]
    assert headers["Content-Range"] == "bytes 123456-%d/%d" % (len(blob) - 1, len(blob))
    status, headers, body = _get(server.url("firmware-v1.0.1.bin"), pki.ca_pem, {"Range": "bytes=10-19"})
    assert status == 206 and body == blob[10:20] and headers["Content-Range"] == "bytes 10-19/%d" % len(blob)


def test_head_past_the_end_and_what_is_not_served(served):
    server, pki, blob = served
    status, headers, body = _get(server.url("firmware-v1.0.1.bin"), pki.ca_pem, method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(blob))
    status, headers, _ = _get(server.url("firmware-v1.0.1.bin"), pki.ca_pem, {"Range": "bytes=%d-" % len(blob)})
    assert status == 416 and headers["Content-Range"] == "bytes */%d" % len(blob)
    for path in ("", ".secret", "../outside.bin", "%2e%2e/outside.bin", "nothing.bin"):
        assert _get(server.url(path), pki.ca_pem)[0] == 404, path


def test_a_device_that_trusts_another_ca_gets_nothing(served):
    server, pki, _ = served
    with pytest.raises(urllib.error.URLError) as e:
        _get(server.url("firmware-v1.0.1.bin"), pki.other_ca_pem)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)


def test_parse_range_takes_what_a_device_sends_and_serves_the_rest_whole():
    assert parse_range("bytes=0-") == (0, None) and parse_range("bytes=5-9") == (5, 9)
    for header in (None, "", "bytes=-5", "bytes=1-2,4-5", "bytes=9-5", "items=0-", "bytes=x-"):
        assert parse_range(header) is None, header


def test_otactl_serve_makes_its_ca_serves_and_stops_on_sigterm(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(70_000)
    (www / "fw.bin").write_bytes(blob)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + LIB)
    proc = subprocess.Popen([sys.executable, "-m", "otactl", "serve", str(www), "--port", "0", "--pki-dir",
                             str(tmp_path / "pki")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(tmp_path), env=env)
    try:
        ca_line = proc.stdout.readline()
        serving = proc.stdout.readline()
        assert "ca.der" in ca_line, (ca_line, serving)
        assert serving.startswith("serving %s at https://localhost:" % www), serving
        url = serving.split(" at ", 1)[1].strip() + "fw.bin"
        status, _, body = _get(url, str(tmp_path / "pki" / "ca.pem"), {"Range": "bytes=65536-"})
        assert status == 206 and hashlib.sha256(body).digest() == hashlib.sha256(blob[65536:]).digest()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err  # a stop is the way a server ends: exit 0, as before


def test_otactl_serve_names_a_key_that_does_not_fit(tmp_path, capsys):
    from otactl import cli

    pki = make_pki(str(tmp_path / "pki"))
    argv = ["serve", str(tmp_path), "--port", "0", "--cert", pki.server_cert, "--key", pki.rogue_key]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err.startswith("otactl: bad_certificate: ")
