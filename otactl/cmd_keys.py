"""`otactl keys`: the Ed25519 key pair that signs OTA triggers (docs/SIGNING.md).

    otactl keys generate --out DIR    DIR/trigger_signing_key.pem (private, mode 0600) and
                                      DIR/trigger_signing_key.pub (64 hex digits: ota.signing_pubkey)
    otactl keys show KEY.pem          prints the public key of a private key file

The private key stays with the operator (never on a device, never in git); the public hex goes into
each device's config.json as ota.signing_pubkey, or into the firmware (a frozen `ota_keys` module).
"""
import os

from ota.errors import OtaError

PRIVATE_NAME = "trigger_signing_key.pem"
PUBLIC_NAME = "trigger_signing_key.pub"


def argparse_keys(parser):
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    generate = sub.add_parser("generate", help="make a new key pair")
    generate.add_argument("--out", required=True, metavar="DIR", help="folder for the two key files")
    generate.add_argument("--force", action="store_true", help="replace existing key files")
    show = sub.add_parser("show", help="print the public key (hex) of a private key file")
    show.add_argument("key", help="private key PEM")


def _write_new(path, data, mode, force):
    # O_EXCL: never overwrite a key by accident (an operator who loses the old private key must
    # re-provision every device). The mode is set at creation, so the key is never world-readable.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise OtaError("exists", "%s exists (--force replaces it)" % path)
    except OSError as e:
        raise OtaError("write_failed", "cannot write %s: %s" % (path, e.strerror or e))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # an existing file (--force) keeps its old mode otherwise


def do_keys(args):
    from . import signing

    if args.keys_command == "generate":
        os.makedirs(args.out, exist_ok=True)
        private_path = os.path.join(args.out, PRIVATE_NAME)
        public_path = os.path.join(args.out, PUBLIC_NAME)
        if not args.force:
            for path in (private_path, public_path):
                if os.path.exists(path):
                    raise OtaError("exists", "%s exists (--force replaces it)" % path)
        key = signing.generate_key()
        public_hex = signing.public_key_hex(key)
        _write_new(private_path, signing.private_key_pem(key), 0o600, args.force)
        _write_new(public_path, (public_hex + "\n").encode(), 0o644, args.force)
        print("private key: %s (keep it secret; mode 0600)" % private_path)
        print("public key:  %s" % public_path)
        print("device config: {\"ota\": {\"signing_pubkey\": \"%s\", \"require_signature\": true}}" % public_hex)
        return 0
    if args.keys_command == "show":
        print(signing.public_key_hex(signing.load_private_key(args.key)))
        return 0
    raise OtaError("bad_arguments", "otactl keys: generate or show")
