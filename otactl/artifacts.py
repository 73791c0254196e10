"""Compressed and delta artifacts of a release (docs/COMPRESSED.md), and which one a device gets.

    fields = write(directory, stem, version, image, base_url)    # by `otactl release`, into the manifest
    kind, extra = choose(manifest, running_version)              # "delta" | "compressed" | "full"

`otactl release` writes beside firmware-vX.bin:
    firmware-vX.otaz              the image, raw deflate (4 KiB window) in pieces of 64 KiB
    firmware-vW-to-vX.otaz        a patch from each older release W in the folder (the newest
                                  MAX_DELTAS that have their .bin), kept only when smaller than the
                                  compressed image
and in the manifest: "compressed": {url, file, sha256, size} and "deltas": [{from, base_sha256, url,
file, sha256, size}, ...]. Every artifact is decoded again here and compared with the image before
it is published.
"""
import hashlib
import json
import os

from . import zimage
from ota.errors import OtaError
from .fleet import compare_versions

MAX_DELTAS = 5  # bsdiff of a 1.7 MB image takes seconds; older devices take the compressed image


def _entry(directory, name, blob, base_url):
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return {"url": base_url + name, "file": name, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def _earlier_releases(directory, version, image_stem):
    found = []
    for name in sorted(os.listdir(directory)):
        if not (name.startswith("firmware-v") and name.endswith(".json")) or name[:-5] == image_stem:
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                manifest = json.load(f)
            with open(os.path.join(directory, manifest["file"]), "rb") as f:
                blob = f.read()
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a release with its image: no patch from it
        try:
            older = compare_versions(manifest.get("version"), version) < 0  # patches go forward only
        except (OtaError, TypeError, ValueError):
            older = False
        if older and hashlib.sha256(blob).hexdigest() == manifest.get("sha256"):
            found.append((os.path.getmtime(os.path.join(directory, name)), manifest, blob))
    found.sort(key=lambda item: item[0])
    return [(m, b) for _, m, b in found[-MAX_DELTAS:]]


def write(directory, stem, version, image, base_url):
    """Writes the artifacts; returns the manifest fields. Raises OtaError artifact_mismatch when one
    does not decode back to the image (never published)."""
    packed = zimage.pack_image(image)
    if zimage.unpack(packed) != image:
        raise OtaError("artifact_mismatch", "the compressed image does not decode to the image")
    fields = {"compressed": _entry(directory, stem + ".otaz", packed, base_url), "deltas": []}
    for manifest, base in _earlier_releases(directory, version, stem):
        patch = zimage.pack_patch(base, image)
        if len(patch) >= len(packed):
            continue  # the compressed image is smaller: no point
        if zimage.unpack(patch, base) != image:
            raise OtaError("artifact_mismatch", "the patch from %s does not decode to the image" % manifest["version"])
        name = "%s-to-v%s.otaz" % (manifest["file"][:-4], version.lstrip("vV"))
        entry = _entry(directory, name, patch, base_url)
        entry.update({"from": manifest["version"], "base_sha256": manifest["sha256"]})
        fields["deltas"].append(entry)
    return fields


def choose(manifest, running_version):
    """The smallest artifact a device running `running_version` can use -> (kind, trigger fields to
    add to the manifest's url/sha256/size: url replaced for compressed and delta). No file_sha256 in
    the trigger: the device then lets DeflateIO read the socket itself (5x less CPU than hashing the
    file through Python, docs/COMPRESSED.md); the image's sha256 is the check, as for a .bin. The
    manifest keeps each file's sha256 for whoever uploads or mirrors them."""
    compressed = manifest.get("compressed")
    for delta in manifest.get("deltas") or ():
        if running_version is not None and delta.get("from") == running_version:
            extra = {"url": delta["url"], "encoding": "delta", "file_size": delta["size"],
                     "base_sha256": delta["base_sha256"]}
            # A device whose image is not the release's (same version, other bytes) takes the next best.
            if compressed:
                extra.update(fallback=compressed["url"], fallback_encoding="deflate")
            else:
                extra["fallback"] = manifest["url"]
            return "delta", extra
    if compressed:
        return "compressed", {"url": compressed["url"], "encoding": "deflate", "file_size": compressed["size"]}
    return "full", {}
