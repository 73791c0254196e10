# What the operator's tool takes from files and servers it does not control (issue 17): a release
# whose version the device cannot tell from one already out, provision's CA path over the device's
# own files, and `otactl serve` across restarts and slow Range clients.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from otactl import cli, firmware_image  # noqa: E402

BASE = "https://fw.example/releases/"


def image(tmp_path, version, seed=0):
    path = tmp_path / ("app-%s-%d.bin" % (version, seed))
    path.write_bytes(firmware_image.build_image(version, [("main.py", b"print(%r)\n" % version)], seed=seed))
    return str(path)


def test_release_refuses_versions_the_device_compares_equal(tmp_path, capsys):
    out = str(tmp_path / "releases")
    assert cli.main(["release", image(tmp_path, "1.0.0"), "--dir", out, "--base-url", BASE]) == 0
    capsys.readouterr()
    for version in ("1.0", "1.0.0+b2", "v1.0.0", "1"):
        assert cli.main(["release", image(tmp_path, version, seed=3), "--dir", out]) == 1
        err = capsys.readouterr().err
        assert err.startswith("otactl: version_exists: version %s is 1.0.0 to the device" % version), err
    assert sorted(os.listdir(out)) == ["firmware-v1.0.0.bin", "firmware-v1.0.0.json", "latest.json"]
    assert cli.main(["release", image(tmp_path, "1.0.1"), "--dir", out]) == 0
