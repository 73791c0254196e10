# Signed OTA triggers: the canonical message both sides sign/verify, and the device's policy checks.
# With a verified signature the trigger's sha256 is the operator's word, so the web server that holds
# the image becomes untrusted storage (docs/SIGNING.md).
#
#   ok = signature.check(trigger, ota_cfg, device_id, now, replay_store, keys)
#       # True: signature verified (and its seq persisted in replay_store, replay.Replay); False:
#       # unsigned and allowed by policy; else raises OtaError
#   keys = signature.public_keys(ota_cfg)              # from ota.signing_pubkey (+ a frozen ota_keys)
#   signature.allow_downgrade(trigger, ota_cfg, ok)    # what update.run may do about older versions
#   signature.target_matches(target, device_id)        # "*", "id" or "id1,id2"
#
# Canonical message (version 2): UTF-8 of these lines joined by "\n", no trailing newline:
#   ota-trigger-v2
#   type=<type>  url=<url>  sha256=<lowercase hex>  size=<int>  version=<str>  id=<str>
#   target=<str>  expires=<int>  allow_downgrade=<1 or empty>  seq=<int>  project=<str>
# one "name=value" line per field in exactly that order; an absent (None) field has an empty value.
# A trigger with an "encoding" (compressed or delta artifact, docs/COMPRESSED.md) signs version 3:
# first line "ota-trigger-v3", the same lines, then encoding, file_sha256, file_size, base_sha256,
# fallback, fallback_encoding the same way; so everything it says about the artifact is signed, and
# a trigger without one signs exactly the version 2 message it always did.
# trigger.parse keeps only printable ASCII in these fields, so no value can contain "\n" and forge a
# line; canonical() refuses one all the same. The trigger carries "signature": 128 hex characters,
# the raw 64-byte Ed25519 signature (RFC 8032) of that message.
#
# check() reasons (stable, on the status topic), in the order they are tested (cheap ones first: a
# verification takes about a second on a C3 and must not be spent on a trigger refused anyway):
#   unsigned         policy ota.require_signature and the trigger has no signature
#   no_signing_key   the trigger is signed but the device has no public key to check it with
#   bad_signature    not 128 hex characters, or it does not verify with any configured key
#   missing_id       a signed trigger without "id" (the job's name on the state topic)
#   missing_expires  a signed trigger without "expires"
#   missing_seq      a signed trigger without "seq" (replay protection needs one)
#   clock_not_set    signed, but the clock is unset (ntptime failed): expiry cannot be judged
#   expired          expires <= now
#   expires_too_far  expires more than MAX_VALIDITY_S ahead (a careless operator's trigger stays
#                    usable by whoever captured it, on a device that has not seen a later one)
#   wrong_target     target is neither "*" nor (a list holding) this device's id
#   replayed         seq is not above the highest the device accepted from the key that signed it
#                    (checked before the verification when it is stale for every key, and after it
#                    for the key that verified)
# When a signature is present it must verify even if the policy does not require one.
import binascii

from ota.errors import OtaError

FIELDS = ("type", "url", "sha256", "size", "version", "id", "target", "expires", "allow_downgrade",
          "seq", "project")
PREFIX = "ota-trigger-v2"
PREFIX_ENCODED = "ota-trigger-v3"
ENCODED_FIELDS = ("encoding", "file_sha256", "file_size", "base_sha256", "fallback", "fallback_encoding")
# Plain ints, not const(): 1704067200 is beyond a 32-bit port's small ints (31 bits).
CLOCK_VALID_AFTER = 1704067200  # 2024-01-01: a clock before that has not been set by ntptime
MAX_VALIDITY_S = 2678400  # 31 days


def canonical(trigger):
    # The bytes that are signed. Raises OtaError bad_signature for a value holding a newline.
    encoded = trigger.get("encoding") is not None
    lines = [PREFIX_ENCODED if encoded else PREFIX]
    for name in FIELDS + ENCODED_FIELDS if encoded else FIELDS:
        value = trigger.get(name)
        if name == "allow_downgrade":
            value = "1" if value is True else ""  # absent and false sign the same: "no"
        elif value is None:
            value = ""
        elif name in ("sha256", "file_sha256", "base_sha256"):
            value = value.lower()  # trigger.parse lowercases it: sign what the device will see
        else:
            value = str(value)
        if "\n" in value:
            raise OtaError("bad_signature", "newline in field " + name)
        lines.append(name + "=" + value)
    return "\n".join(lines).encode()


# A trigger is good strictly before its `expires` (Unix seconds). The one rule for signed and
# unsigned triggers alike (jobrun.py checks every trigger, check() the signed ones).
def has_expired(expires, now):
    return expires <= now


def target_matches(target, device_id):
    # None (absent) is everyone, like "*". A comma-separated list names several devices.
    if target is None or target == "*":
        return True
    return device_id in target.split(",")


def public_keys(ota_cfg):
    # The Ed25519 public keys (32 bytes each) the device trusts: ota.signing_pubkey from the config,
    # plus KEYS of an optional module `ota_keys` frozen into the firmware (a tuple of 64-hex strings;
    # a key in the firmware cannot be changed by someone who can only write the filesystem).
    # Raises OtaError bad_config for a malformed key.
    texts = []
    try:
        from ota_keys import KEYS

        texts.extend(KEYS)
    except ImportError:
        pass
    if ota_cfg.get("signing_pubkey"):
        texts.append(ota_cfg["signing_pubkey"])
    keys = []
    for text in texts:
        try:
            key = binascii.unhexlify(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise OtaError("bad_config", "signing key must be 64 hex digits")
        keys.append(key)
    return keys


def _decode_signature(text):
    if not isinstance(text, str) or len(text) != 128:
        return None
    try:
        return binascii.unhexlify(text)
    except ValueError:
        return None


# Raises OtaError with the reasons above. Returns True (verified) or False (unsigned, allowed).
# now: Unix seconds or None (state.unix_time() gives None while the clock is unset).
def check(trigger, ota_cfg, device_id, now, replay_store, keys):
    text = trigger.get("signature")
    if text is None:
        if ota_cfg.get("require_signature"):
            raise OtaError("unsigned", "policy ota.require_signature: the trigger is not signed")
        return False
    if not keys:
        raise OtaError("no_signing_key", "signed trigger, but no ota.signing_pubkey configured")
    signature = _decode_signature(text)
    if signature is None:
        raise OtaError("bad_signature", "signature must be 128 hex characters")
    job_id, expires, seq = trigger.get("id"), trigger.get("expires"), trigger.get("seq")
    if job_id is None:
        raise OtaError("missing_id", "a signed trigger needs an id")
    if expires is None:
        raise OtaError("missing_expires", "a signed trigger needs expires")
    if seq is None:
        raise OtaError("missing_seq", "a signed trigger needs seq")
    if now is None or now < CLOCK_VALID_AFTER:
        raise OtaError("clock_not_set", "cannot judge expires before the clock is set (ntptime)")
    if has_expired(expires, now):
        raise OtaError("expired", "expired %d s ago" % (now - expires))
    if expires - now > MAX_VALIDITY_S:
        raise OtaError("expires_too_far", "expires in %d s, more than %d" % (expires - now, MAX_VALIDITY_S))
    if not target_matches(trigger.get("target"), device_id):
        raise OtaError("wrong_target", "for %s, not %s" % (trigger.get("target"), device_id))
    from ota.replay import key_id

    ids = [key_id(key) for key in keys]
    floor = min([replay_store.highest(name) for name in ids])
    if seq <= floor:  # stale for every key: no verification spent on it
        raise OtaError("replayed", "job %s: seq %d is not above %d" % (job_id, seq, floor))
    from ota import ed25519  # imported here: a device that never sees a signed trigger saves the RAM

    message = canonical(trigger)
    for key, name in zip(keys, ids):
        if ed25519.verify(key, message, signature):
            highest = replay_store.highest(name)
            if seq <= highest:
                raise OtaError("replayed", "job %s: seq %d is not above %d" % (job_id, seq, highest))
            replay_store.accept(name, seq)  # before the job starts; OSError: refused, never run twice
            return True
    raise OtaError("bad_signature", "does not verify with any of %d key(s)" % len(keys))


def allow_downgrade(trigger, ota_cfg, verified):
    # Anti-downgrade stays on unless the device's config turns it off, or a VERIFIED trigger says
    # allow_downgrade: an unsigned trigger cannot switch it off (anyone on the broker could send one).
    if ota_cfg.get("allow_downgrade"):
        return True
    return bool(verified) and trigger.get("allow_downgrade") is True
