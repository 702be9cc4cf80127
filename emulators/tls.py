"""Self-signed TLS material for the local emulators.

The certificate is its own CA, so a client can trust exactly this one server
by pointing `verify` at the certificate file.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "emulator-cert.pem"
KEY_NAME = "emulator-key.pem"
LOOPBACK_IPS = ("127.0.0.1", "::1")
LOOPBACK_NAMES = ("localhost",)
VALIDITY = datetime.timedelta(days=825)


def make_cert(directory: str | Path) -> tuple[str, str]:
    """Write a loopback certificate and key into `directory`, reusing a valid pair."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    if not _usable(cert_path, key_path):
        key = ec.generate_private_key(ec.SECP256R1())
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        cert_path.write_bytes(_build_cert(key).public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


def _usable(cert_path: Path, key_path: Path) -> bool:
    """Tell whether an existing pair is present and valid for another day."""
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    margin = _now() + datetime.timedelta(days=1)
    return cert.not_valid_after_utc > margin


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _build_cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Sign a certificate for the loopback names with its own key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    public = key.public_key()
    start = _now() - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + VALIDITY)
    )
    for extension, critical in _extensions(public):
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def _extensions(
    public: ec.EllipticCurvePublicKey,
) -> list[tuple[x509.ExtensionType, bool]]:
    """List the extensions strict verifiers expect on a self-issued server cert."""
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in LOOPBACK_NAMES]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOOPBACK_IPS]
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return [
        (x509.SubjectAlternativeName(alt_names), False),
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (usage, True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.SubjectKeyIdentifier.from_public_key(public), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(public), False),
    ]


def _now() -> datetime.datetime:
    """Return the current UTC time."""
    return datetime.datetime.now(datetime.UTC)
