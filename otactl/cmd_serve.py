"""`otactl serve DIR`: serve firmware files over HTTPS with Range support (otactl/serve.py).

The seed guide's Python server calls ssl.wrap_socket, which Python 3.12 removed. This one uses an
SSLContext with the operator's certificate and key (--cert, --key) or, without them, makes its own
CA and server certificate in --pki-dir (otactl/devca.py) and prints the CA file to install on devices
(ca.der). The CA is kept there: a restart serves with the same CA (a new one at every start would
leave every device that holds ca.der unable to download). Files are streamed, a Range answer from its
offset, never read whole. For a large fleet, nginx, S3 or GitHub releases (README "Hosting firmware").
"""
import ssl
import os

from ota.errors import OtaError


def argparse_serve(parser):
    parser.add_argument("directory", help="folder with the firmware files")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert", help="server certificate (PEM); default: generate one in --pki-dir")
    parser.add_argument("--key", help="server key (PEM), with --cert")
    parser.add_argument("--pki-dir", default="pki", help="where a generated CA and certificate go")
    parser.add_argument("--name", action="append", default=[],
                        help="extra DNS name or IP for the generated certificate (repeatable)")


def serving_pki(args):
    """The CA and server certificate in --pki-dir: the CA made at the first start, reused after."""
    from . import devca  # cryptography: imported only when a CA is to be made

    names = tuple(devca.SERVER_NAMES) + tuple(args.name)
    if args.host not in ("127.0.0.1", "0.0.0.0", "::", ""):
        names += (args.host,)
    return devca.serving_pki(args.pki_dir, server_names=names)


def do_serve(args):
    from .serve import FileServer

    if not os.path.isdir(args.directory):
        raise OtaError("bad_directory", "%s is not a directory" % args.directory)
    if bool(args.cert) != bool(args.key):
        raise OtaError("bad_arguments", "--cert and --key go together")
    certfile, keyfile = args.cert, args.key
    if not certfile:
        pki = serving_pki(args)
        certfile, keyfile = pki.server_cert, pki.server_key
        print("CA for the devices: %s (DER; copy it to the device as ca.der), %s (PEM); kept in %s "
              "for the next start" % (pki.ca_der, pki.ca_pem, args.pki_dir), flush=True)
    try:
        server = FileServer(args.directory, certfile, keyfile, host=args.host, port=args.port, verbose=True)
    except ssl.SSLError as e:
        raise OtaError("bad_certificate", "%s / %s: %s" % (certfile, keyfile, e.reason or e))
    except OSError as e:
        if e.filename:
            raise OtaError("bad_certificate", "cannot read %s: %s" % (e.filename, e.strerror))
        raise OtaError("serve_failed", "cannot serve on %s:%d: %s" % (args.host, args.port, e.strerror or e))
    print("serving %s at %s" % (args.directory, server.url()), flush=True)
    server.start()
    try:
        server.wait()
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM (the CLI turns it into KeyboardInterrupt): a clean stop
    finally:
        server.stop()
    return 0
