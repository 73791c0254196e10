"""`otactl image inspect` and `otactl image build`: the handlers and their argparse setup.

Registered by otactl/cli.py in its command table. `image build` makes a synthetic image carrying
this checkout's device code for the simulator: the dev kit's (devkit/images.py), forwarded to it.
Errors are the device's OtaError (lib/ota/errors.py); the CLI prints `otactl: <reason>: <detail>` and
exits 1.
"""
import hashlib
import os
import sysconfig

from . import REPO, firmware_image, partitions
from ota.errors import OtaError


def default_partitions():
    """The partition table the fleet's firmware is built with: the checkout's partitions.csv, or the
    copy installed with otactl (pyproject.toml data-files: <prefix>/share/otactl/partitions.csv)."""
    for path in (os.path.join(REPO, "partitions.csv"),
                 os.path.join(sysconfig.get_path("data"), "share", "otactl", "partitions.csv")):
        if os.path.isfile(path):
            return path
    return os.path.join(REPO, "partitions.csv")  # missing: slot_size_from names it in its error


DEFAULT_PARTITIONS = default_partitions()


def chip_rev(text):
    """argparse type of --chip-rev: major*100+minor, a 16-bit field in the image header and 0..65535
    in the device's config (ota.chip_rev), so a value outside that is a typo, refused here."""
    value = int(text)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(text)  # argparse: "invalid chip_rev value"
    return value


def slot_size_from(path):
    """The size of the OTA app slots in a partitions.csv (the smallest, if they differ)."""
    slots = partitions.ota_slots(partitions.load(path))
    if not slots:
        raise OtaError("bad_partition_table", "%s has no ota_N app slots" % path)
    return min(p.size for p in slots)


def argparse_image_build(sub):
    p = sub.add_parser("build", help="build a synthetic app image carrying a version of the device code "
                       "for the simulator (dev kit)")
    p.add_argument("--version", required=True, help="app descriptor version, e.g. 1.0.1")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--size", type=lambda s: int(s, 0), help="exact image length (a multiple of 16)")
    p.add_argument("--files-from", metavar="DIR",
                   help="pack the files under DIR (default: lib/**.py and umqtt.simple)")
    p.add_argument("--project-name", default=firmware_image.PRODUCT,
                   help="app descriptor project_name (default %r, what our firmware build sets)"
                   % firmware_image.PRODUCT)
    p.add_argument("--secure-version", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of the filler bytes")
    p.set_defaults(func=do_image_build)
    return p


def do_image_build(args):
    from .cli import devkit_module

    images = devkit_module("images")  # OtaError devkit_missing outside a checkout
    files = images.files_under(args.files_from) if args.files_from else images.device_files()
    image = images.build_image(args.version, files, size=args.size, project_name=args.project_name,
                               secure_version=args.secure_version, seed=args.seed)
    with open(args.out, "wb") as f:
        f.write(image)
    print("%s: %d bytes, version %s, %d files, sha256 %s" % (
        args.out, len(image), args.version, len(files), hashlib.sha256(image).hexdigest()))
    return 0


def add_device_arguments(p):
    p.add_argument("--product", default=firmware_image.PRODUCT,
                   help="project_name of the firmware the devices run (default %r: our firmware "
                   "build; an image must carry it)" % firmware_image.PRODUCT)


def argparse_image_inspect(sub):
    p = sub.add_parser("inspect", help="run the device's image checks on a file, and explain")
    p.add_argument("file")
    p.add_argument("--partitions", default=DEFAULT_PARTITIONS,
                   help="partitions.csv giving the slot size (default: the repository's)")
    p.add_argument("--slot-size", type=lambda s: int(s, 0), help="slot size, instead of --partitions")
    p.add_argument("--chip-rev", type=chip_rev, help="chip revision as major*100+minor (e.g. 4 for v0.4)")
    add_device_arguments(p)
    p.add_argument("--running", metavar="VERSION", help="the version the devices run (downgrade check)")
    p.add_argument("--version", help="the version the trigger will name")
    p.add_argument("--project", help="the trigger's project override (the name the image may carry, "
                   "or * for any)")
    p.add_argument("--allow-downgrade", action="store_true", help="as a signed trigger or the device "
                   "policy allowing a downgrade")
    p.set_defaults(func=do_image_inspect)
    return p


def do_image_inspect(args):
    try:
        with open(args.file, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise OtaError("io_error", "cannot read %s: %s" % (args.file, e.strerror))
    slot_size = args.slot_size if args.slot_size is not None else slot_size_from(args.partitions)
    device = firmware_image.device_context(args.product, args.running, args.version, args.project,
                                           args.allow_downgrade)
    report = firmware_image.inspect_image(blob, slot_size=slot_size, chip_rev=args.chip_rev, device=device)
    info = report.info
    print("%s: %d bytes" % (args.file, len(blob)))
    if "version" in info:
        print("  version %r  project %r  secure_version %d  ESP-IDF %s  built %s %s" % (
            info["version"], info["project_name"], info["secure_version"], info["idf_ver"],
            info["date"], info["time"]))
    for check in report:
        print("  %-4s  %-15s %-15s %s" % ("ok" if check.ok else "FAIL", check.name,
                                         check.reason or "-", check.detail))
    if report.verdict:
        raise OtaError(*report.refusal())
    print("  the device would accept this image")
    return 0


def argparse_image(parser):
    """`otactl image build|inspect`: fills the `image` command's parser with its two subcommands."""
    inner = parser.add_subparsers(dest="image_command", required=True, metavar="build|inspect")
    argparse_image_build(inner)
    argparse_image_inspect(inner)
    return parser


def do_image(args):
    return args.func(args)
