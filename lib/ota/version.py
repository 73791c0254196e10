# The running firmware's version (from its app descriptor, the same field the image check reads
# from a download) and version comparison for "is this an update?".
from ota.errors import OtaError
from ota.image import HEADER_BYTES, parse_descriptor


def read_descriptor(partition):
    # partition: esp32.Partition (or anything with readblocks(block, buf)). Returns the descriptor
    # dict of the image in it. Raises OSError on a read error, OtaError not_app_image.
    buf = bytearray(HEADER_BYTES)
    partition.readblocks(0, buf)  # reads len(buf) bytes from the start of the slot
    return parse_descriptor(buf)


def _parse(text):
    # "v1.2.0-rc1+build7" -> ([1, 2, 0], "rc1"). Raises OtaError bad_version.
    core = text[1:] if text[:1] in ("v", "V") else text
    plus = core.find("+")
    if plus >= 0:
        core = core[:plus]
    pre = ""
    dash = core.find("-")
    if dash >= 0:
        core, pre = core[:dash], core[dash + 1:]
    numbers = []
    for part in core.split("."):
        if not part or not part.isdigit():
            raise OtaError("bad_version", "%r is not a version like 1.2.3 or v1.2.3-rc1" % text)
        numbers.append(int(part))
    while len(numbers) > 1 and numbers[-1] == 0:  # 1.0 == 1.0.0
        numbers.pop()
    return numbers, pre


def _tokens(pre):
    # "rc10.b" -> [(1, "rc"), (0, 10), (1, "b")]: digit runs compare as numbers (rc2 < rc10) and
    # before letters, as semver orders numeric identifiers first. So "rc.1", "rc1" and "rc01" are
    # one version, on purpose (docs/DESIGN.md, "Version order").
    out = []
    run = ""
    for ch in pre + ".":
        if run and (ch == "." or ch.isdigit() != run[-1].isdigit()):
            out.append((0, int(run)) if run.isdigit() else (1, run))
            run = ""
        if ch != ".":
            run += ch
    return out


def compare(a, b):
    # -1 if a < b, 0 if equal, 1 if a > b. A pre-release sorts before its release:
    # 1.2.0-rc1 < 1.2.0. Raises OtaError bad_version.
    numbers_a, pre_a = _parse(a)
    numbers_b, pre_b = _parse(b)
    if numbers_a != numbers_b:
        return -1 if numbers_a < numbers_b else 1
    if pre_a == pre_b:
        return 0
    if not pre_a or not pre_b:
        return 1 if not pre_a else -1
    key_a, key_b = _tokens(pre_a), _tokens(pre_b)
    if key_a == key_b:
        return 0
    return -1 if key_a < key_b else 1
