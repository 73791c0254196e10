"""The messages otactl sends to devices: triggers and reverts, each checked with the device's own
parser (lib/ota/trigger.py) before it leaves, and optionally signed (otactl/signing.py).

    message, payload = trigger_message(url, sha256, size, version, job)   # (dict, bytes)
    message, payload = revert_message(job)
    key = load_sign_key(path); payload = encode(message, key, target=device_id)[1]
"""
import json
import secrets

from ota.errors import OtaError

from ota import trigger as device_trigger

MAX_JOB_ID = device_trigger.MAX_ID


def new_job_id(prefix):
    job = "%s-%s" % (prefix, secrets.token_hex(4))
    return job[-MAX_JOB_ID:] if len(job) > MAX_JOB_ID else job


def load_sign_key(path):
    """The Ed25519 key for --sign-key (otactl/signing.py). Raises OtaError."""
    try:
        from . import signing
    except ImportError as e:
        raise OtaError("not_available", "--sign-key needs otactl/signing.py (signed triggers): %s" % e)
    return signing.load_private_key(path)


def sign(message, key, target="*"):
    """otactl/signing.py's sign_trigger: adds target, expires and signature. A per-device trigger is
    signed for that device alone, so it cannot be replayed to the rest of the fleet."""
    from . import signing

    return signing.sign_trigger(message, key, target=target)


def trigger_message(url, sha256=None, size=None, version=None, job=None, sign_key=None, target="*",
                    project=None):
    """The seed guide's {"type": "ota_trigger", "url": ...} plus sha256/size/version/id/project,
    checked with the device's own parser (lib/ota/trigger.py). sign_key: from load_sign_key().
    Returns (dict, bytes). Raises OtaError."""
    message = {"type": "ota_trigger", "url": url}
    for key, value in (("sha256", sha256), ("size", size), ("version", version), ("id", job),
                       ("project", project)):
        if value is not None:
            message[key] = value
    return encode(message, sign_key, target)


def revert_message(job, sign_key=None, target="*", allow_downgrade=False):
    """allow_downgrade: a device heeds it only on a signed revert (signature.allow_downgrade)."""
    message = {"type": "ota_revert", "id": job}
    if allow_downgrade:
        message["allow_downgrade"] = True
    return encode(message, sign_key, target)


def encode(message, sign_key=None, target="*"):
    if sign_key is not None:
        message = sign(message, sign_key, target)
    payload = json.dumps(message, separators=(",", ":")).encode()
    try:
        device_trigger.parse(payload)
    except OtaError as e:  # the device would refuse it: say so here, not on 1,000 devices
        raise OtaError(e.reason, "the device would refuse this trigger: %s" % e.detail)
    return message, payload
