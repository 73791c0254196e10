"""Ed25519 signing of OTA triggers on the operator's side (the `cryptography` package).

    key = generate_key()
    signed = sign_trigger({"type": "ota_trigger", "url": ..., "sha256": ..., "id": "job-42"}, key,
                          expires_in=3600, target="*")

There is ONE canonical form: the device's own `lib/ota/signature.py`, imported from here (the same way
`otactl provision` uses `lib/ota/config.py`), so host and device cannot drift apart. Before signing,
the trigger goes through the device's `trigger.parse` too: what is signed is exactly what a device
will accept and see. docs/SIGNING.md describes the format.
"""
import binascii
import json
import os
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ota.errors import OtaError


from ota import signature as device_signature  # (the device module, for canonical())
from ota import trigger as device_trigger

MAX_EXPIRES_IN = device_signature.MAX_VALIDITY_S
_last_seq = 0


def next_seq(now=None):
    """The seq of the next signed trigger: milliseconds since the epoch at signing time, and above the
    previous one of this process (two signatures in one millisecond). A device refuses any seq not
    above the highest it accepted from the key, so operators signing on several machines need clocks
    that agree to well under the time between two triggers to one device (docs/SIGNING.md)."""
    global _last_seq
    seq = max(int((time.time() if now is None else now) * 1000), _last_seq + 1)
    _last_seq = seq
    return seq


def generate_key():
    return Ed25519PrivateKey.generate()


def private_key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(path):
    # Raises OtaError bad_key (unreadable, not PEM, not an Ed25519 key).
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as e:
        raise OtaError("bad_key", "cannot read %s: %s" % (path, e.strerror or e))
    except (ValueError, TypeError) as e:
        raise OtaError("bad_key", "%s is not an unencrypted PEM private key: %s" % (path, e))
    if not isinstance(key, Ed25519PrivateKey):
        raise OtaError("bad_key", "%s is not an Ed25519 key" % path)
    return key


def public_key_hex(key):
    # 64 hex digits: what goes into the device config as ota.signing_pubkey.
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return binascii.hexlify(raw).decode()


def canonical(trigger):
    # The device's canonical(): bytes. Raises OtaError bad_trigger.
    try:
        return device_signature.canonical(trigger)
    except OtaError as e:
        raise OtaError("bad_trigger", str(e))


def _parse_as_device(trigger):
    # The device's parser, on the JSON the device will receive. Raises OtaError bad_trigger.
    payload = json.dumps(trigger, separators=(",", ":")).encode()
    try:
        parsed = device_trigger.parse(payload)
    except OtaError as e:
        raise OtaError("bad_trigger", "a device would refuse it: %s" % e)
    if parsed is None:
        raise OtaError("bad_trigger", "type must be one of %s" % ", ".join(device_trigger.KNOWN_TYPES))
    return parsed


def sign_trigger(trigger, private_key, expires_in=3600, target="*", now=None, allow_downgrade=None,
                 seq=None):
    """A new dict: the trigger plus id (made up if absent), target, expires, seq (next_seq() unless
    given) and signature.

    private_key: an Ed25519PrivateKey or the path of its PEM file (load_private_key).
    Raises OtaError bad_trigger when a device would refuse the trigger (or its signed form: too long,
    bad fields), bad_expires for a validity outside 1 s .. 31 days.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        private_key = load_private_key(private_key)
    if not 0 < expires_in <= MAX_EXPIRES_IN:
        raise OtaError("bad_expires", "expires_in must be 1..%d s, got %r" % (MAX_EXPIRES_IN, expires_in))
    signed = {k: v for k, v in trigger.items() if k != "signature"}
    if signed.get("id") is None:
        signed["id"] = "job-" + binascii.hexlify(os.urandom(6)).decode()
    signed["target"] = target
    signed["expires"] = int(time.time() if now is None else now) + int(expires_in)
    signed["seq"] = next_seq(now) if seq is None else seq
    if allow_downgrade is not None:
        signed["allow_downgrade"] = bool(allow_downgrade)
    if signed.get("allow_downgrade") is False:
        del signed["allow_downgrade"]  # signs the same as absent; keep the payload short
    if isinstance(signed.get("sha256"), str):
        signed["sha256"] = signed["sha256"].lower()
    _parse_as_device(signed)
    signed["signature"] = binascii.hexlify(private_key.sign(canonical(signed))).decode()
    _parse_as_device(signed)  # the signed payload must still fit (trigger.MAX_PAYLOAD)
    return signed


def verify_trigger(trigger, public_key):
    """True if the trigger's signature verifies with public_key (Ed25519PublicKey, 32 bytes or hex)."""
    if isinstance(public_key, str):
        public_key = binascii.unhexlify(public_key)
    if isinstance(public_key, (bytes, bytearray)):
        public_key = Ed25519PublicKey.from_public_bytes(bytes(public_key))
    try:
        raw = binascii.unhexlify(trigger.get("signature") or "")
        public_key.verify(raw, canonical(trigger))
        return len(raw) == 64
    except (InvalidSignature, ValueError, binascii.Error):
        return False
