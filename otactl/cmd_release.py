"""`otactl release FILE`: check an app image as the device will, then publish it as a versioned
release next to the old ones (the seed guide's "version everything" and "keep old versions").

    releases/firmware-v1.0.0.bin   firmware-v1.0.0.json
    releases/firmware-v1.0.1.bin   firmware-v1.0.1.json
    releases/latest.json           a copy of the manifest of the highest version released

A manifest: {"version", "url", "sha256", "size", "project", "created", "file", "min_rev",
"max_rev", "secure_version", "compressed", "deltas"} (the last two: otactl/artifacts.py); `otactl trigger --manifest` and `otactl rollout --manifest` read it.
The version is the image's own (its app descriptor): the device refuses an image whose descriptor
does not say the trigger's version (version_mismatch), so the manifest cannot claim another.

Refused, with the device's reason code: anything the device's image checks refuse (wrong_chip,
chip_revision, not_app_image, wrong_product, bad_version, bad_checksum, too_large against the OTA
slot of --partitions ...),
an image without a version (no_version), the same version again with other content
(version_exists), and a version the device cannot tell from one already released (version_exists:
1.0, 1.0.0 and 1.0.0+b2 compare equal in lib/ota/version.py, so a fleet on 1.0.0 would answer a
trigger for 1.0.0+b2 with same_version and never install it). The same file released twice is a
no-op.
"""
import datetime
import hashlib
import json
import os
import re

from . import firmware_image
from .cmd_image import DEFAULT_PARTITIONS, add_device_arguments, chip_rev, slot_size_from
from ota.errors import OtaError
from .fleet import compare_versions

_SAFE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,30}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MANIFEST_FIELDS = ("version", "url", "sha256", "size")


def file_stem(version):
    # "1.0.1" and "v1.0.1" both -> "firmware-v1.0.1"
    return "firmware-v" + (version[1:] if version[:1] in "vV" else version)


def _write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise OtaError("io_error", "cannot read %s %s: %s" % (what, path, e.strerror))


def load_manifest(path):
    """A manifest file -> dict with version, url, sha256, size checked. Raises OtaError bad_manifest."""
    blob = _read(path, "manifest")
    try:
        manifest = json.loads(blob)
    except (ValueError, UnicodeError) as e:
        raise OtaError("bad_manifest", "%s is not JSON: %s" % (path, e))
    return check_manifest(manifest, path)


def check_manifest(manifest, where="manifest"):
    if not isinstance(manifest, dict):
        raise OtaError("bad_manifest", "%s is not a JSON object" % where)
    missing = [k for k in MANIFEST_FIELDS if manifest.get(k) in (None, "")]
    if missing:
        raise OtaError("bad_manifest", "%s has no %s" % (where, ", ".join(missing)))
    if not isinstance(manifest["url"], str) or not re.match(r"^https?://[^/?#\s]+", manifest["url"]):
        raise OtaError("bad_manifest", "%s: url %r is not an http(s) URL" % (where, manifest["url"]))
    if not isinstance(manifest["sha256"], str) or not _HEX64.match(manifest["sha256"]):
        raise OtaError("bad_manifest", "%s: sha256 must be 64 lowercase hex characters" % where)
    size = manifest["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise OtaError("bad_manifest", "%s: size must be a positive integer" % where)
    if not isinstance(manifest["version"], str) or not _SAFE_VERSION.match(manifest["version"]):
        raise OtaError("bad_manifest", "%s: version %r is not a version" % (where, manifest["version"]))
    compare_versions(manifest["version"], manifest["version"])  # orderable, as the device needs
    return manifest


def _base_url(args, directory):
    """--base-url, else OTACTL_BASE_URL, else the folder URL of the previous release (latest.json)."""
    base = args.base_url or os.environ.get("OTACTL_BASE_URL")
    if not base:
        latest = os.path.join(directory, "latest.json")
        if os.path.exists(latest):
            url = load_manifest(latest)["url"]
            base = url[:url.rfind("/") + 1]
    if not base:
        raise OtaError("missing_base_url", "where will devices download it from? give --base-url "
                       "https://host/path/ (remembered from latest.json for the next releases)")
    if not re.match(r"^https?://[^/?#\s]+", base):
        raise OtaError("bad_base_url", "%r is not an http(s) URL" % base)
    return base if base.endswith("/") else base + "/"


def release(image_path, directory, base_url=None, partitions_path=DEFAULT_PARTITIONS,
            chip_rev=None, now=None, product=firmware_image.PRODUCT):
    """Check and publish; returns (manifest, created: bool). Raises OtaError.
    product: the project_name the fleet's firmware carries (compat.check: wrong_product)."""
    blob = _read(image_path, "image")
    slot_size = slot_size_from(partitions_path)
    report = firmware_image.inspect_image(blob, slot_size=slot_size, chip_rev=chip_rev,
                                          device=firmware_image.device_context(product))
    if report.verdict is not None:
        reason, detail = report.refusal()
        raise OtaError(reason, "%s refused: %s" % (image_path, detail))
    if len(blob) > slot_size:
        raise OtaError("too_large", "%s is %d bytes, the OTA slot holds %d" % (image_path, len(blob), slot_size))
    info = report.info
    version = info.get("version") or ""
    if not version:
        raise OtaError("no_version", "%s has an empty version in its app descriptor (stock MicroPython "
                       "builds leave it empty): build it with a version" % image_path)
    if not _SAFE_VERSION.match(version):
        raise OtaError("bad_version", "version %r cannot name a release file" % version)
    compare_versions(version, version)
    digest = hashlib.sha256(blob).hexdigest()
    stem = file_stem(version)
    bin_path = os.path.join(directory, stem + ".bin")
    json_path = os.path.join(directory, stem + ".json")
    twin = _equal_release(directory, version)
    if twin is not None:
        raise OtaError("version_exists", "version %s is %s to the device (trailing .0 and +build do not "
                       "count in its comparison), already released in %s: bump the version"
                       % (version, twin["version"], directory))
    if os.path.exists(bin_path) or os.path.exists(json_path):
        old = hashlib.sha256(_read(bin_path, "release")).hexdigest() if os.path.exists(bin_path) else None
        if old != digest:
            raise OtaError("version_exists", "version %s is already released with other content "
                           "(%s, sha256 %s): a version names one image forever; bump the version"
                           % (version, bin_path, old))
        return load_manifest(json_path), False
    base = base_url
    manifest = {
        "version": version,
        "url": base + stem + ".bin",
        "sha256": digest,
        "size": len(blob),
        "project": info.get("project_name") or None,
        "created": (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file": stem + ".bin",
        "secure_version": info.get("secure_version"),
        "min_rev": info.get("min_rev"),
        "max_rev": info.get("max_rev"),
    }
    os.makedirs(directory, exist_ok=True)
    _write_atomic(bin_path, blob)
    from . import artifacts  # the compressed image and the patches from earlier releases

    manifest.update(artifacts.write(directory, stem, version, blob, base))
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    _write_atomic(json_path, text)
    latest = os.path.join(directory, "latest.json")
    try:
        newest = load_manifest(latest)["version"] if os.path.exists(latest) else None
    except OtaError:
        newest = None  # a broken latest.json is replaced
    if newest is None or compare_versions(version, newest) > 0:
        _write_atomic(latest, text)
    return manifest, True


def _equal_release(directory, version):
    """The manifest of a release in `directory` whose version is another string for the same version
    as the device compares them, or None."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    for name in names:
        if not (name.startswith("firmware-v") and name.endswith(".json")):
            continue
        try:
            manifest = load_manifest(os.path.join(directory, name))
        except OtaError:
            continue  # not ours to judge here
        if manifest["version"] != version and compare_versions(manifest["version"], version) == 0:
            return manifest
    return None


def argparse_release(parser):
    parser.add_argument("file", help="the app image (micropython.bin, not the merged firmware.bin)")
    parser.add_argument("--dir", default="releases", help="release folder (default releases/)")
    parser.add_argument("--base-url", help="URL of the release folder as devices see it "
                        "(default: OTACTL_BASE_URL, else the previous release's)")
    parser.add_argument("--partitions", default=DEFAULT_PARTITIONS,
                        help="partitions.csv giving the OTA slot size (default: the repository's)")
    parser.add_argument("--chip-rev", type=chip_rev, help="also check this chip revision (major*100+minor)")
    add_device_arguments(parser)


def do_release(args):
    base = _base_url(args, args.dir)
    manifest, created = release(args.file, args.dir, base, args.partitions, args.chip_rev,
                                product=args.product)
    stem = os.path.join(args.dir, file_stem(manifest["version"]))
    if not created:
        print("%s: version %s is already released as %s.bin (same content): nothing to do"
              % (args.file, manifest["version"], stem))
        return 0
    print("released %s: %d bytes, sha256 %s" % (manifest["version"], manifest["size"], manifest["sha256"]))
    print("  %s.bin\n  %s.json\n  url %s" % (stem, stem, manifest["url"]))
    print("next: upload %s/ to the server, then `otactl rollout --manifest %s.json`" % (args.dir, stem))
    return 0
