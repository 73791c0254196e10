# What the operator's tool takes from files and servers it does not control (issue 17): a release
# whose version the device cannot tell from one already out, provision's CA path over the device's
# own files, and `otactl serve` across restarts and slow Range clients.
import os

from otactl import cli
from devkit import images

BASE = "https://fw.example/releases/"


def image(tmp_path, version, seed=0):
    path = tmp_path / ("app-%s-%d.bin" % (version, seed))
    path.write_bytes(images.build_image(version, [("main.py", b"print(%r)\n" % version)], seed=seed))
    return str(path)


def test_release_refuses_versions_the_device_compares_equal(tmp_path, capsys):
    out = str(tmp_path / "releases")
    assert cli.main(["release", image(tmp_path, "1.0.0"), "--dir", out, "--base-url", BASE]) == 0
    capsys.readouterr()
    for version in ("1.0", "1.0.0+b2", "v1.0.0", "1"):
        assert cli.main(["release", image(tmp_path, version, seed=3), "--dir", out]) == 1
        err = capsys.readouterr().err
        assert err.startswith("otactl: version_exists: version %s is 1.0.0 to the device" % version), err
    # the first release (its compressed copy beside it), and nothing from the refused ones
    assert sorted(os.listdir(out)) == ["firmware-v1.0.0.bin", "firmware-v1.0.0.json", "firmware-v1.0.0.otaz",
                                       "latest.json"]
    assert cli.main(["release", image(tmp_path, "1.0.1"), "--dir", out]) == 0


def _serve_args(tmp_path, *names):
    import argparse

    return argparse.Namespace(pki_dir=str(tmp_path / "pki"), name=list(names), host="127.0.0.1")


def test_serve_keeps_its_ca_across_restarts(tmp_path):
    from otactl import cmd_serve

    first = cmd_serve.serving_pki(_serve_args(tmp_path))
    ca = open(first.ca_der, "rb").read()
    server = open(first.server_cert, "rb").read()
    again = cmd_serve.serving_pki(_serve_args(tmp_path))  # the restart
    assert open(again.ca_der, "rb").read() == ca and open(again.server_cert, "rb").read() == server
    renamed = cmd_serve.serving_pki(_serve_args(tmp_path, "fw.lan"))  # a new name: new leaf, same CA
    assert open(renamed.ca_der, "rb").read() == ca and open(renamed.server_cert, "rb").read() != server


def test_serve_streams_a_range_without_reading_the_file(tmp_path):
    # A Range answer from a file of 8 MiB, through the real server over TLS: the server's Python heap
    # grows by its 64 KiB buffer, not by the file (it read the whole file, then sliced it: twice).
    import hashlib
    import ssl
    import tracemalloc
    import urllib.request

    from devkit import devserver
    from devkit import tls

    pki = tls.make_pki(str(tmp_path / "pki"))
    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(8 << 20)
    (www / "fw.bin").write_bytes(blob)
    context = ssl.create_default_context(cafile=pki.ca_pem)
    with devserver.DevServer(str(www), pki.server_cert, pki.server_key) as server:
        request = urllib.request.Request(server.url("fw.bin"), headers={"Range": "bytes=1000-"})
        tracemalloc.start()
        try:
            with urllib.request.urlopen(request, context=context, timeout=60) as answer:
                assert answer.status == 206
                assert answer.headers["Content-Range"] == "bytes 1000-%d/%d" % (len(blob) - 1, len(blob))
                digest = hashlib.sha256()
                while True:
                    piece = answer.read(65536)
                    if not piece:
                        break
                    digest.update(piece)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(blob[1000:]).hexdigest()
    assert peak < 2 << 20, peak  # both sides of the connection together, well under the file


def test_provision_refuses_a_ca_path_over_the_devices_own_files(tmp_path, capsys):
    # provision copies --ca to ota.ca_path (and mqtt.ca_path): config.json there was overwritten by
    # the CA, and the agent then died at boot on a config.json that was not UTF-8.
    from devkit import tls

    pki = tls.make_pki(str(tmp_path / "pki"))
    for section, path in (("ota", "config.json"), ("ota", "main.py"), ("mqtt", "/boot.py")):
        config = tmp_path / "my.json"
        overrides = {"wifi": {"ssid": "lab"}, "mqtt": {"host": "broker.lan", "tls": True}}
        overrides.setdefault(section, {})["ca_path"] = path
        config.write_text(__import__("json").dumps(overrides))
        argv = ["provision", "--port", "/dev/null", "--config", str(config), "--ca", pki.ca_der, "--dry-run"]
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        own_files = "otactl: bad_config: %s.ca_path: must not be one of the device's own files" % section
        assert err.startswith(own_files), err
