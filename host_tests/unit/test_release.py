# `otactl release`: the device's image checks on the host, versioned files kept side by side, the
# manifest the trigger and the rollout read.
import hashlib
import json
import os

import pytest

from otactl import cli, cmd_release
from devkit import images
from ota.errors import OtaError

BASE = "https://fw.example/releases/"
SMALL_TABLE = """# name, type, subtype, offset, size
nvs,      data, nvs,     0x9000,  0x5000
otadata,  data, ota,     0xe000,  0x2000
ota_0,    app,  ota_0,   0x10000, 0x10000
ota_1,    app,  ota_1,   0x20000, 0x10000
"""


def image(tmp_path, version, name=None, **kwargs):
    path = tmp_path / (name or "app-%s.bin" % version)
    path.write_bytes(images.build_image(version, [("main.py", b"print(%r)\n" % version)], **kwargs))
    return str(path)


def release(tmp_path, path, *extra):
    return cli.main(["release", path, "--dir", str(tmp_path / "releases"), *extra])


def test_good_image_manifest_fields(tmp_path, capsys):
    path = image(tmp_path, "1.0.1")
    assert release(tmp_path, path, "--base-url", BASE) == 0
    out = tmp_path / "releases"
    blob = open(path, "rb").read()
    assert (out / "firmware-v1.0.1.bin").read_bytes() == blob
    manifest = json.loads((out / "firmware-v1.0.1.json").read_text())
    assert manifest["version"] == "1.0.1"
    assert manifest["url"] == BASE + "firmware-v1.0.1.bin"
    assert manifest["sha256"] == hashlib.sha256(blob).hexdigest()
    assert manifest["size"] == len(blob)
    assert manifest["project"] == "micropython"
    assert manifest["created"].endswith("Z") and manifest["file"] == "firmware-v1.0.1.bin"
    assert json.loads((out / "latest.json").read_text()) == manifest
    assert "released 1.0.1" in capsys.readouterr().out
    assert cmd_release.load_manifest(str(out / "firmware-v1.0.1.json")) == manifest


def test_other_chip_refused_nothing_written(tmp_path, capsys):
    path = tmp_path / "esp32.bin"
    path.write_bytes(images.with_chip_id(images.build_image("1.0.1"), "esp32"))
    assert release(tmp_path, str(path), "--base-url", BASE) == 1
    assert capsys.readouterr().err.startswith("otactl: wrong_chip: ")
    assert not (tmp_path / "releases" / "firmware-v1.0.1.bin").exists()


def test_merged_image_refused(tmp_path, capsys):
    path = tmp_path / "firmware.bin"
    path.write_bytes(images.merged_image(images.build_image("1.0.1")))
    assert release(tmp_path, str(path), "--base-url", BASE) == 1
    assert "otactl: not_app_image: " in capsys.readouterr().err


def test_too_large_for_the_slot(tmp_path, capsys):
    table = tmp_path / "small.csv"
    table.write_text(SMALL_TABLE)
    path = image(tmp_path, "1.0.1", size=0x10000 + 4096)
    assert release(tmp_path, path, "--base-url", BASE, "--partitions", str(table)) == 1
    err = capsys.readouterr().err
    assert err.startswith("otactl: too_large: ") and err.count("\n") == 1
    assert not os.listdir(tmp_path / "releases") if (tmp_path / "releases").exists() else True


def test_keeps_old_versions_latest_moves_forward_only(tmp_path):
    for version in ("1.0.0", "1.0.1"):
        assert release(tmp_path, image(tmp_path, version), "--base-url", BASE) == 0
    # an older maintenance release after a newer one: kept, but latest stays on the newest
    assert release(tmp_path, image(tmp_path, "0.9.5")) == 0  # base URL remembered from latest.json
    out = tmp_path / "releases"
    names = sorted(n for n in os.listdir(out) if not n.endswith(".otaz"))  # test_release_artifacts.py
    assert names == ["firmware-v0.9.5.bin", "firmware-v0.9.5.json", "firmware-v1.0.0.bin",
                     "firmware-v1.0.0.json", "firmware-v1.0.1.bin", "firmware-v1.0.1.json", "latest.json"]
    assert json.loads((out / "latest.json").read_text())["version"] == "1.0.1"
    assert json.loads((out / "firmware-v0.9.5.json").read_text())["url"] == BASE + "firmware-v0.9.5.bin"


def test_same_version_other_content_refused_same_content_noop(tmp_path, capsys):
    first = image(tmp_path, "1.0.1", "a.bin")
    assert release(tmp_path, first, "--base-url", BASE) == 0
    assert release(tmp_path, first) == 0
    assert "nothing to do" in capsys.readouterr().out
    other = image(tmp_path, "1.0.1", "b.bin", seed=7)
    assert release(tmp_path, other) == 1
    assert capsys.readouterr().err.startswith("otactl: version_exists: version 1.0.1 is already released")
    kept = (tmp_path / "releases" / "firmware-v1.0.1.bin").read_bytes()
    assert kept == open(first, "rb").read()


def test_no_base_url_and_no_version(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OTACTL_BASE_URL", raising=False)
    assert release(tmp_path, image(tmp_path, "1.0.1")) == 1
    assert capsys.readouterr().err.startswith("otactl: missing_base_url: ")
    assert release(tmp_path, image(tmp_path, "", "stock.bin"), "--base-url", BASE) == 1
    assert capsys.readouterr().err.startswith("otactl: no_version: ")


@pytest.mark.parametrize("text, reason", [
    ("not json", "bad_manifest"),
    ("[]", "bad_manifest"),
    ('{"version": "1.0.1", "url": "ftp://x/y.bin", "sha256": "%s", "size": 3}' % ("a" * 64), "bad_manifest"),
    ('{"version": "1.0.1", "url": "https://x/y.bin", "sha256": "xyz", "size": 3}', "bad_manifest"),
    ('{"version": "1.0.1", "url": "https://x/y.bin", "sha256": "%s"}' % ("a" * 64), "bad_manifest"),
])
def test_malformed_manifest(tmp_path, text, reason):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(OtaError) as e:
        cmd_release.load_manifest(str(path))
    assert e.value.reason == reason
