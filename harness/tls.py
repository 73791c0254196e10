# A throwaway PKI for tests and demos, made with `cryptography`: the device must verify the server
# against a CA it holds (docs/CHIP.md §10), so every TLS test needs a CA we control, plus the bad
# certificates each verification failure is tested with.
#
#   pki = make_pki(dirpath)
#   pki.ca_der, pki.ca_pem            the CA the device trusts (ca.der is what goes on the device)
#   pki.server_cert, pki.server_key   for 'localhost', '127.0.0.1' and '::1' (PEM)
#   pki.expired_cert/_key             same names, validity ended yesterday
#   pki.wrong_host_cert/_key          valid, signed by the CA, but only for 'wrong.example'
#   pki.other_ca_der, pki.other_ca_pem  an unrelated CA (wrong-CA test: trust this one instead)
#   pki.rogue_cert/_key               for 'localhost', signed by the unrelated CA
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


class Pki:
    pass


def _key():
    # P-256: small and fast on the device (mbedTLS on the C3 has it; RSA-2048 verify is slower).
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name, now):
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(names, ca_cert, ca_key, not_before, not_after):
    key = _key()
    sans = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def _write_cert(dirpath, stem, cert):
    pem = _write(os.path.join(dirpath, stem + ".pem"), cert.public_bytes(serialization.Encoding.PEM))
    der = _write(os.path.join(dirpath, stem + ".der"), cert.public_bytes(serialization.Encoding.DER))
    return pem, der


def _write_key(dirpath, stem, key):
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = _write(os.path.join(dirpath, stem + ".key"), data)
    os.chmod(path, 0o600)
    return path


def make_pki(dirpath, server_names=SERVER_NAMES):
    """Write the whole test PKI into dirpath (created if missing); return a Pki of file paths."""
    os.makedirs(dirpath, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    pki = Pki()
    pki.dir = dirpath
    ca, ca_key = _ca("OTA test CA", now)
    other_ca, other_key = _ca("Unrelated test CA", now)
    pki.ca_pem, pki.ca_der = _write_cert(dirpath, "ca", ca)
    pki.ca_key = _write_key(dirpath, "ca", ca_key)
    pki.other_ca_pem, pki.other_ca_der = _write_cert(dirpath, "other-ca", other_ca)

    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=365))
    leaves = {
        "server": (list(server_names), ca, ca_key, valid),
        "expired": (list(server_names), ca, ca_key,
                    (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))),
        "wrong-host": (["wrong.example"], ca, ca_key, valid),
        "rogue": (list(server_names), other_ca, other_key, valid),
    }
    for stem, (names, issuer, issuer_key, (start, end)) in leaves.items():
        cert, key = _leaf(names, issuer, issuer_key, start, end)
        attr = stem.replace("-", "_")
        setattr(pki, attr + "_cert", _write_cert(dirpath, stem, cert)[0])
        setattr(pki, attr + "_key", _write_key(dirpath, stem, key))
    return pki


def serving_pki(dirpath, server_names=SERVER_NAMES, now=None):
    """`otactl serve`'s PKI, kept across restarts: a CA already in dirpath (ca.pem, ca.key) is used
    again, so devices that were given its ca.der keep trusting the server after a restart. Only a
    server certificate that is missing, from another CA, short of one of server_names or within 30
    days of its end is issued again, by that same CA. An empty dirpath gets make_pki's."""
    ca_pem, ca_key_path = os.path.join(dirpath, "ca.pem"), os.path.join(dirpath, "ca.key")
    if not (os.path.exists(ca_pem) and os.path.exists(ca_key_path)):
        return make_pki(dirpath, server_names)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    with open(ca_pem, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    pki = Pki()
    pki.dir = dirpath
    pki.ca_pem, pki.ca_key = ca_pem, ca_key_path
    pki.ca_der = _write(os.path.join(dirpath, "ca.der"), ca.public_bytes(serialization.Encoding.DER))
    pki.server_cert, pki.server_key = os.path.join(dirpath, "server.pem"), os.path.join(dirpath, "server.key")
    if not _covers(pki.server_cert, pki.server_key, ca, server_names, now):
        cert, key = _leaf(list(server_names), ca, ca_key, now - datetime.timedelta(days=1),
                          now + datetime.timedelta(days=365))
        _write_cert(dirpath, "server", cert)
        _write_key(dirpath, "server", key)
    return pki


def _covers(cert_path, key_path, ca, names, now):
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return False
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    if cert.issuer != ca.subject or cert.not_valid_after_utc < now + datetime.timedelta(days=30):
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(n) for n in sans.get_values_for_type(x509.DNSName)}
    have |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return all(str(ipaddress.ip_address(n)) in have if _is_ip(n) else n in have for n in names)


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False
