"""Fetch PyPI micropython-* packages (upip-format sdists pip cannot install).

Each line of the list names a package, a version and the sdist's sha256. The sdist URL comes from
PyPI's JSON API; the download must match the pinned hash, then its modules (the .py files under the
sdist's top folder, setup.py excluded) are unpacked into the destination folder, which the Unix-port
runs put on sys.path. Nothing fetched is committed.
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request

PYPI_JSON = "https://pypi.org/pypi/{name}/json"


class FetchError(Exception):
    pass


def read_pins(path):
    pins = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 3 or len(fields[2]) != 64:
                raise FetchError("%s:%d: expected 'name version sha256'" % (path, number))
            pins.append(tuple(fields))
    return pins


def sdist_url(name, version):
    with urllib.request.urlopen(PYPI_JSON.format(name=name), timeout=60) as r:
        meta = json.load(r)
    if version not in meta["releases"]:
        raise FetchError("%s has no version %s on PyPI" % (name, version))
    for entry in meta["releases"][version]:
        if entry["packagetype"] == "sdist":
            return entry["url"], entry["digests"]["sha256"]
    raise FetchError("%s %s has no sdist on PyPI" % (name, version))


def unpack(blob, dest):
    written = []
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")[1:]
            if not member.isfile() or not parts or not parts[-1].endswith(".py"):
                continue
            if parts == ["setup.py"] or any(p in ("", "..") for p in parts):
                continue
            target = os.path.join(dest, *parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as out:
                out.write(tar.extractfile(member).read())
            written.append("/".join(parts))
    return written


def fetch(name, version, sha256, dest):
    marker = os.path.join(dest, ".%s-%s" % (name, version))
    if os.path.exists(marker):
        return
    url, registry_sha = sdist_url(name, version)
    if registry_sha != sha256:
        raise FetchError("%s %s: PyPI lists sha256 %s, pinned %s" % (name, version, registry_sha, sha256))
    with urllib.request.urlopen(url, timeout=120) as r:
        blob = r.read()
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise FetchError("%s %s: download has sha256 %s, pinned %s" % (name, version, got, sha256))
    files = unpack(blob, dest)
    if not files:
        raise FetchError("%s %s: no modules in the sdist" % (name, version))
    open(marker, "w").write("\n".join(files) + "\n")
    print("fetched %s %s: %s" % (name, version, ", ".join(files)), file=sys.stderr)


def main(argv):
    if len(argv) != 3:
        print("usage: fetch_mpy_packages.py LIST DEST", file=sys.stderr)
        return 2
    os.makedirs(argv[2], exist_ok=True)
    try:
        for name, version, sha256 in read_pins(argv[1]):
            fetch(name, version, sha256, argv[2])
    except (FetchError, OSError) as e:
        print("fetch_mpy_packages: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
