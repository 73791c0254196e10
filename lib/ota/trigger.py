# Strict parsing of the MQTT trigger JSON (the seed guide's message, plus optional fields).
#
#   {"type": "ota_trigger", "url": "https://host/fw.bin"}                       the minimal message
#   {"type": "ota_trigger", "url": ..., "sha256": "<64 hex>", "size": 1234567, "version": "1.2.0",
#    "id": "job-42", "signature": "<128 hex>", "expires": 1767225600, "target": "a0b1c2d3e4f5",
#    "allow_downgrade": false, "seq": 1767225600123, "project": "micropython"}  (docs/SIGNING.md)
#   {"type": "ota_trigger", "url": "https://host/fw.otaz", "sha256": <the image's>, "size": <the
#    image's>, "encoding": "deflate", "file_sha256": <the container's>, "file_size": n}  compressed
#   {..., "encoding": "delta", "base_sha256": <64 hex>, "fallback": "https://host/fw.bin",
#    "fallback_encoding": "deflate"}           a patch against the running image (docs/COMPRESSED.md)
#   {"type": "ota_revert", "id": "job-43"}                                      boot the other slot
#
# parse() returns a normalised dict, None for a message without a type or of an unknown type (ignored:
# the switch application shares the cmd topics, and new types must not break old firmware), or raises OtaError with a stable reason:
#   too_long, bad_json, not_object, missing_url, bad_url, bad_sha256_field, bad_size,
#   bad_version, bad_job_id, bad_signature_field, bad_expires, bad_target, bad_allow_downgrade,
#   bad_project, bad_seq, bad_encoding
# Unknown extra fields are dropped. Runs unchanged under MicroPython and CPython (host_tests run both
# on the same payloads): only ASCII is accepted in the fields we keep, so both give the same answers.
import json

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(value):
        return value

from ota.errors import OtaError

MAX_PAYLOAD = const(1024)  # checked before json.loads: a 10 KB message never reaches the parser
_MAX_URL = const(512)
_MAX_VERSION = const(31)  # esp_app_desc_t.version is char[32], NUL-terminated
MAX_ID = const(40)  # public: otactl makes job ids that fit
_MAX_SIGNATURE = const(256)  # Ed25519: 88 chars base64, 128 hex
MAX_SEQ = 9007199254740991  # 2**53 - 1; a plain int, not const(): beyond a 32-bit port's small ints
_MAX_TARGET = const(200)  # "*", one id, or a comma-separated list of ids (about 15)

KNOWN_TYPES = ("ota_trigger", "ota_revert")
_HEX = "0123456789abcdef"


def _printable(text):
    # ASCII printable without the space (0x21..0x7E), for every field we keep: a version or id lands
    # in a topic-visible JSON message and in the job file, a target list is split at "," only
    # (signature.target_matches: "a, b" would never match device "b"), and a URL's space must be %20.
    for ch in text:
        if not 0x21 <= ord(ch) <= 0x7E:
            return False
    return True


def _short_string(value, limit):
    return isinstance(value, str) and 0 < len(value) <= limit and _printable(value)


def _is_int(value):
    # JSON true/false come back as bool, which is an int subclass in both Pythons: refuse them.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_url(url):
    # Raises OtaError bad_url. The scheme check is the only policy here; https.open enforces the rest
    # (allow_http, host syntax) when it splits the URL.
    if not isinstance(url, str):
        raise OtaError("bad_url", "url is not a string")
    if len(url) > _MAX_URL:
        raise OtaError("bad_url", "url longer than %d" % _MAX_URL)
    if not _printable(url):
        raise OtaError("bad_url", "url has spaces or non-ASCII characters")
    sep = url.find("://")
    scheme = url[:sep].lower() if sep > 0 else ""
    if scheme not in ("https", "http"):
        raise OtaError("bad_url", "scheme %r not supported" % (scheme or url[:16]))
    if len(url) == sep + 3 or url[sep + 3] in "/?#":
        raise OtaError("bad_url", "no host")


def _check_sha256(value):
    if not isinstance(value, str) or len(value) != 64:
        raise OtaError("bad_sha256_field", "sha256 must be 64 hex characters")
    value = value.lower()
    for ch in value:
        if ch not in _HEX:
            raise OtaError("bad_sha256_field", "sha256 must be 64 hex characters")
    return value


def _optional(msg, out):
    # The fields both types share.
    job_id = msg.get("id")
    if job_id is not None and not _short_string(job_id, MAX_ID):
        raise OtaError("bad_job_id", "id must be 1..%d printable ASCII characters" % MAX_ID)
    out["id"] = job_id
    signature = msg.get("signature")
    if signature is not None and not _short_string(signature, _MAX_SIGNATURE):
        raise OtaError("bad_signature_field", "signature must be a short ASCII string")
    out["signature"] = signature
    expires = msg.get("expires")
    if expires is not None and not (_is_int(expires) and expires >= 0):
        raise OtaError("bad_expires", "expires must be an integer (Unix time)")
    out["expires"] = expires
    target = msg.get("target")
    if target is not None and not _short_string(target, _MAX_TARGET):
        raise OtaError("bad_target", "target must be a device id")
    out["target"] = target
    # Only a signed trigger may lower the version (signature.allow_downgrade); the flag is covered by
    # the signature, so it must survive parsing.
    allow_downgrade = msg.get("allow_downgrade", False)
    if not isinstance(allow_downgrade, bool):
        raise OtaError("bad_allow_downgrade", "allow_downgrade must be true or false")
    out["allow_downgrade"] = allow_downgrade
    # The product the image may be (compat.py): an image of another project_name is refused unless
    # the trigger names it ("*": any). Signed, like every field that changes what the device does.
    project = msg.get("project")
    if project is not None and not _short_string(project, _MAX_VERSION):
        raise OtaError("bad_project", "project must be 1..%d printable ASCII characters" % _MAX_VERSION)
    out["project"] = project
    # A signed trigger's sequence number: above every one the device accepted from that key
    # (replay.py). A positive integer a JSON number holds exactly.
    seq = msg.get("seq")
    if seq is not None and not (_is_int(seq) and 0 < seq <= MAX_SEQ):
        raise OtaError("bad_seq", "seq must be an integer 1..%d" % MAX_SEQ)
    out["seq"] = seq


def parse(payload, max_len=MAX_PAYLOAD):
    # payload: bytes from the MQTT callback. Returns dict or None; raises OtaError (reasons above).
    if len(payload) > max_len:
        raise OtaError("too_long", "%d bytes > %d" % (len(payload), max_len))
    try:
        # Decoded here, as UTF-8, on both ports: CPython's json.loads would take bytes and guess
        # UTF-16 or UTF-32 from them, which the device's decode() refuses. Every caller has bytes.
        msg = json.loads(payload.decode())
    except (ValueError, UnicodeError):  # CPython's JSONDecodeError is a ValueError
        raise OtaError("bad_json", "payload is not UTF-8 JSON")
    except (MemoryError, RuntimeError):
        # Deep nesting, which no trigger has: MicroPython's parser keeps its stack on the GC heap
        # (600 levels ask for one 8 KB block on the Unix port; the device fuzz dropped the MQTT
        # connection over it), CPython's recurses (RecursionError is a RuntimeError). Whatever the
        # parser built is garbage now: the heap is whole again for the next message.
        raise OtaError("bad_json", "payload nests too deeply to parse in the free heap")
    if not isinstance(msg, dict):
        raise OtaError("not_object", "payload is JSON but not an object")
    kind = msg.get("type")
    if kind not in KNOWN_TYPES:  # absent or another application's command on the shared topic
        return None
    out = {"type": kind}
    if kind == "ota_trigger":
        if "url" not in msg:
            raise OtaError("missing_url", "ota_trigger needs a url")
        _check_url(msg["url"])
        out["url"] = msg["url"]
        sha256 = msg.get("sha256")
        out["sha256"] = None if sha256 is None else _check_sha256(sha256)
        size = msg.get("size")
        if size is not None and not (_is_int(size) and size > 0):
            raise OtaError("bad_size", "size must be a positive integer")
        out["size"] = size
        version = msg.get("version")
        if version is not None and not _short_string(version, _MAX_VERSION):
            raise OtaError("bad_version", "version must be 1..%d printable ASCII characters" % _MAX_VERSION)
        out["version"] = version
        _encoding(msg, out)
    _optional(msg, out)
    return out



# The artifact fields of a compressed or delta trigger (artifact.py, imported only for those).
ENCODING_FIELDS = ("encoding", "file_sha256", "file_size", "base_sha256", "fallback", "fallback_encoding")


def _encoding(msg, out):
    for name in ENCODING_FIELDS:
        if name in msg:
            from ota import artifact

            artifact.parse(msg, out)
            return
