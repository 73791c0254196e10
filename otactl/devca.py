"""`otactl serve`'s development CA, made with `cryptography` (a declared dependency of otactl).

A device verifies the server against a CA it holds (docs/CHIP.md §10; there is no CA bundle on the
device), so a development server needs a CA the operator controls: this one makes it once, keeps it
in a folder, and issues the server certificate from it (P-256, for `localhost`, `127.0.0.1`, `::1`
and the names asked for). For production, serve with a certificate from the operator's own CA
(`otactl serve --cert --key`), nginx, S3 or GitHub releases (README "Hosting firmware").

    pki = serving_pki(dirpath, server_names)
    pki.ca_der, pki.ca_pem            the CA the devices trust (ca.der is what goes on a device)
    pki.server_cert, pki.server_key   the server's certificate and key (PEM)

The dev kit's test PKI (devkit/tls.py: expired, wrong-host and rogue certificates) builds on these.
"""
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


def make_ca(common_name, now):
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


def make_leaf(names, ca_cert, ca_key, not_before, not_after):
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


def write_cert(dirpath, stem, cert):
    pem = _write(os.path.join(dirpath, stem + ".pem"), cert.public_bytes(serialization.Encoding.PEM))
    der = _write(os.path.join(dirpath, stem + ".der"), cert.public_bytes(serialization.Encoding.DER))
    return pem, der


def write_key(dirpath, stem, key):
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = _write(os.path.join(dirpath, stem + ".key"), data)
    os.chmod(path, 0o600)
    return path


def serving_pki(dirpath, server_names=SERVER_NAMES, now=None):
    """`otactl serve`'s PKI, kept across restarts: a CA already in dirpath (ca.pem, ca.key) is used
    again, so devices that were given its ca.der keep trusting the server after a restart. Only a
    server certificate that is missing, from another CA, short of one of server_names or within 30
    days of its end is issued again, by that same CA. An empty dirpath gets a new CA first."""
    ca_pem, ca_key_path = os.path.join(dirpath, "ca.pem"), os.path.join(dirpath, "ca.key")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not (os.path.exists(ca_pem) and os.path.exists(ca_key_path)):
        os.makedirs(dirpath, exist_ok=True)
        ca, ca_key = make_ca("otactl serve CA", now)
        write_cert(dirpath, "ca", ca)
        write_key(dirpath, "ca", ca_key)
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
        cert, key = make_leaf(list(server_names), ca, ca_key, now - datetime.timedelta(days=1),
                          now + datetime.timedelta(days=365))
        write_cert(dirpath, "server", cert)
        write_key(dirpath, "server", key)
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
