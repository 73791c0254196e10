# `otactl release` writes the compressed image and patches from older releases beside the .bin, lists
# them in the manifest, and otactl.artifacts.choose picks the smallest one a device can use.
import hashlib
import json

from otactl import artifacts, cmd_release, zimage
from devkit import firmware_bytes
from devkit import simfleet

BASE = "https://fw.example/releases/"
SIZE = 320 * 1024  # the device package alone is about 260 KB of source


def _image(version, extra=b""):
    return simfleet.firmware(version, size=SIZE, fill=firmware_bytes.code_bytes()[:200_000],
                             append={"ota/selftest.py": extra} if extra else None)


def _release(tmp_path, blob, name):
    path = tmp_path / name
    path.write_bytes(blob)
    manifest, created = cmd_release.release(str(path), str(tmp_path / "releases"), BASE)
    assert created
    return manifest


def test_release_writes_compressed_and_delta_artifacts(tmp_path):
    v100, v101 = _image("1.0.0"), _image("1.0.1", b"\nX = 1\n")
    first = _release(tmp_path, v100, "a.bin")
    assert first["deltas"] == []  # nothing older to patch from
    second = _release(tmp_path, v101, "b.bin")
    out = tmp_path / "releases"
    packed = (out / "firmware-v1.0.1.otaz").read_bytes()
    assert second["compressed"] == {"url": BASE + "firmware-v1.0.1.otaz", "file": "firmware-v1.0.1.otaz",
                                    "sha256": hashlib.sha256(packed).hexdigest(), "size": len(packed)}
    assert zimage.unpack(packed) == v101 and len(packed) < 0.7 * len(v101)
    [delta] = second["deltas"]
    patch = (out / "firmware-v1.0.0-to-v1.0.1.otaz").read_bytes()
    assert delta == {"url": BASE + "firmware-v1.0.0-to-v1.0.1.otaz", "file": "firmware-v1.0.0-to-v1.0.1.otaz",
                     "sha256": hashlib.sha256(patch).hexdigest(), "size": len(patch), "from": "1.0.0",
                     "base_sha256": hashlib.sha256(v100).hexdigest()}
    assert zimage.unpack(patch, v100) == v101 and len(patch) < 0.05 * len(v101)
    assert json.loads((out / "firmware-v1.0.1.json").read_text()) == second
    # An older maintenance release gets no patch from the newer ones (devices do not go back).
    assert _release(tmp_path, _image("0.9.5", b"\nY = 2\n"), "c.bin")["deltas"] == []


def test_choose_the_smallest_artifact_a_device_can_use(tmp_path):
    _release(tmp_path, _image("1.0.0"), "a.bin")
    manifest = _release(tmp_path, _image("1.0.1", b"\nX = 1\n"), "b.bin")
    kind, extra = artifacts.choose(manifest, "1.0.0")
    assert kind == "delta" and extra["url"].endswith("firmware-v1.0.0-to-v1.0.1.otaz")
    assert extra["fallback"] == manifest["compressed"]["url"] and extra["fallback_encoding"] == "deflate"
    assert artifacts.choose(manifest, "0.9.0") == ("compressed", {
        "url": manifest["compressed"]["url"], "encoding": "deflate", "file_size": manifest["compressed"]["size"]})
    assert "file_sha256" not in extra  # the device's fast path (docs/COMPRESSED.md)
    assert artifacts.choose({"url": "https://x/f.bin", "sha256": "ab" * 32, "size": 1}, "1.0.0") == ("full", {})
