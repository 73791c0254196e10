# The dev kit's throwaway test PKI: otactl's development CA (otactl/devca.py) plus the bad
# certificates each TLS verification failure is tested with. The device must verify the server
# against a CA it holds (docs/CHIP.md §10), so every TLS test needs a CA we control.
#
#   pki = make_pki(dirpath)
#   pki.ca_der, pki.ca_pem            the CA the device trusts (ca.der is what goes on the device)
#   pki.server_cert, pki.server_key   for 'localhost', '127.0.0.1' and '::1' (PEM)
#   pki.expired_cert/_key             same names, validity ended yesterday
#   pki.wrong_host_cert/_key          valid, signed by the CA, but only for 'wrong.example'
#   pki.other_ca_der, pki.other_ca_pem  an unrelated CA (wrong-CA test: trust this one instead)
#   pki.rogue_cert/_key               for 'localhost', signed by the unrelated CA
import datetime
import os

from otactl.devca import SERVER_NAMES, Pki, make_ca, make_leaf, write_cert, write_key


def make_pki(dirpath, server_names=SERVER_NAMES):
    """Write the whole test PKI into dirpath (created if missing); return a Pki of file paths."""
    os.makedirs(dirpath, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    pki = Pki()
    pki.dir = dirpath
    ca, ca_key = make_ca("OTA test CA", now)
    other_ca, other_key = make_ca("Unrelated test CA", now)
    pki.ca_pem, pki.ca_der = write_cert(dirpath, "ca", ca)
    pki.ca_key = write_key(dirpath, "ca", ca_key)
    pki.other_ca_pem, pki.other_ca_der = write_cert(dirpath, "other-ca", other_ca)

    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=365))
    leaves = {
        "server": (list(server_names), ca, ca_key, valid),
        "expired": (list(server_names), ca, ca_key,
                    (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))),
        "wrong-host": (["wrong.example"], ca, ca_key, valid),
        "rogue": (list(server_names), other_ca, other_key, valid),
    }
    for stem, (names, issuer, issuer_key, (start, end)) in leaves.items():
        cert, key = make_leaf(names, issuer, issuer_key, start, end)
        attr = stem.replace("-", "_")
        setattr(pki, attr + "_cert", write_cert(dirpath, stem, cert)[0])
        setattr(pki, attr + "_key", write_key(dirpath, stem, key))
    return pki
