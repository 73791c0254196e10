"""`otactl announce`: the retained release announcement that Home Assistant's Install button installs.

    otactl announce --manifest releases/firmware-v1.0.1.json [--sign-key K] [--target IDS]
                    [--notes-url URL] [--summary TEXT] [--valid-days N]
    otactl announce --withdraw

The announcement is an ota_trigger for the release (url, sha256, size, version, a job id), signed
when --sign-key is given, published RETAINED on /switch/release (config ha.release_topic), with the
release notes URL and a summary next to it. Devices with ha.discovery show its version as the
entity's latest_version and install it only when Install is pressed (lib/ota/ha.py): the same checks
and reason codes as a trigger; under ota.require_signature an unsigned one fails `unsigned`.

Its target says who may install it themselves: "*" (default) is everyone; a staged rollout names its
current wave (--target id1,id2,...) and announces again as it widens, so the button never runs
ahead of the rollout. A signed announcement is valid for --valid-days (at most 31: the device's
limit on a signed trigger's expiry; re-announce before then).
"""
import json
import time

from . import mqtt
from .cmd_release import load_manifest
from ota.errors import OtaError
from .messages import encode, load_sign_key, new_job_id

RELEASE_TOPIC = "/switch/release"
MAX_SUMMARY = 255  # lib/ota/ha.py keeps this much


def announcement(manifest, sign_key=None, target="*", notes_url=None, summary=None, valid_s=7 * 86400,
                 job=None, now=None):
    """-> (dict, bytes): the trigger (signed with sign_key when given) plus release_url and summary.
    Raises OtaError (the device's parser refuses it, bad target, too long)."""
    message = {"type": "ota_trigger", "url": manifest["url"], "sha256": manifest["sha256"],
               "size": manifest["size"], "version": manifest["version"],
               "id": job or new_job_id("v%s" % manifest["version"].lstrip("vV"))}
    if sign_key is not None:
        from . import signing

        message = signing.sign_trigger(message, sign_key, expires_in=valid_s, target=target, now=now)
    elif target != "*":
        message["target"] = target
    message, _ = encode(message)  # the device's parser, before anything goes out
    if notes_url is not None:
        if not notes_url.startswith(("https://", "http://")) or len(notes_url) > 512:
            raise OtaError("bad_arguments", "--notes-url must be an http(s) URL of at most 512 characters")
        message["release_url"] = notes_url
    if summary is not None:
        if len(summary) > MAX_SUMMARY:
            raise OtaError("bad_arguments", "--summary is longer than %d characters" % MAX_SUMMARY)
        message["summary"] = summary
    payload = json.dumps(message, separators=(",", ":")).encode()
    from ota import trigger as device_trigger

    if len(payload) > device_trigger.MAX_PAYLOAD:
        raise OtaError("too_long", "the announcement is %d bytes, devices take %d: shorten --summary"
                       % (len(payload), device_trigger.MAX_PAYLOAD))
    return message, payload


def argparse_announce(parser):
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--manifest", help="release manifest (from `otactl release`)")
    what.add_argument("--withdraw", action="store_true", help="remove the retained announcement")
    parser.add_argument("--sign-key", metavar="KEY", help="sign it (devices with require_signature need this)")
    parser.add_argument("--target", default="*", help='who may install it from HA: "*" or id1,id2 (a rollout wave)')
    parser.add_argument("--notes-url", help="release notes URL (HA's release_url)")
    parser.add_argument("--summary", help="one line shown in HA (release_summary)")
    parser.add_argument("--valid-days", type=float, default=7, help="a signed one's validity (1..31 days)")
    parser.add_argument("--job", help="job id (default: generated)")
    parser.add_argument("--topic", default=RELEASE_TOPIC, help="the devices' ha.release_topic")
    mqtt.add_arguments(parser)


def do_announce(args):
    if args.withdraw:
        payload = b""
    else:
        key = load_sign_key(args.sign_key) if args.sign_key else None
        if not 0 < args.valid_days <= 31:
            raise OtaError("bad_expires", "--valid-days must be more than 0 and at most 31")
        _, payload = announcement(load_manifest(args.manifest), key, args.target, args.notes_url,
                                  args.summary, int(args.valid_days * 86400), args.job, time.time())
    with mqtt.connect(args) as conn:
        conn.publish(args.topic, payload, qos=1, retain=True)
    print("%s <- %s" % (args.topic, payload.decode() or "(withdrawn)"))
    return 0
