"""The Flow's own certificate authority and one SPIFFE identity per workload.

A local Flow makes an *ephemeral* CA at each start (``FlowCA(..., ephemeral=True)``): its key
lives only in the Flow's memory, never on disk, and the certificates it issues go to the
Flow's private run folder (``<run>/pki``), each sidecar's config naming only its own key.
``meshflow certs`` (the exports' one-shot job) keeps a CA in ``--ca-dir`` (apart from the
certificates it hands out) and reuses it across runs: the CA and every certificate it issued
stay valid until 30 days before they expire, then they are renewed. Private keys are written
0600. Identities are ``spiffe://meshflow/<flow>/<workload>``; the
gateway is the workload ``gateway``, each deployment is the workload named like it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)


def spiffe_id(flow: str, workload: str) -> str:
    """The SPIFFE identity of ``workload`` in ``flow``."""
    return f"spiffe://meshflow/{flow}/{workload}"


@dataclass(frozen=True)
class WorkloadCert:
    """A workload's certificate and key files, and the SPIFFE id in its SAN."""

    spiffe_id: str
    cert: str
    key: str
    ca: str


class FlowCA:
    """Creates (once) and uses the certificate authority of one Flow."""

    def __init__(
        self, directory: str, flow: str, *, ca_dir: str | None = None, ephemeral: bool = False
    ) -> None:
        self.directory = directory
        self.flow = flow
        self.ephemeral = ephemeral
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.ca_cert_path = os.path.join(directory, "ca.crt")
        """The trust anchor every workload gets (public)."""
        ca_dir = ca_dir or directory
        self.ca_key_path: str | None = None if ephemeral else os.path.join(ca_dir, "ca.key")
        """Where the CA's key is kept; None for an ephemeral CA (never written)."""
        self._ca_store = os.path.join(ca_dir, "ca.crt")
        if not ephemeral:
            os.makedirs(ca_dir, mode=0o700, exist_ok=True)
        self._ca_cert, self._ca_key = self._load_or_create_ca()

    def _load_or_create_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        loaded = None if self.ca_key_path is None else _load(self._ca_store, self.ca_key_path)
        if loaded is not None and _fresh(loaded[0]):
            if self._ca_store != self.ca_cert_path:
                write_private(
                    self.ca_cert_path, loaded[0].public_bytes(serialization.Encoding.PEM), 0o644
                )
            return loaded
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshflow"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"meshflow {self.flow} CA"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        if self.ca_key_path is not None:
            _write(self._ca_store, self.ca_key_path, cert, key)
        write_private(self.ca_cert_path, cert_pem, 0o644)
        return cert, key

    def identity(self, workload: str) -> WorkloadCert:
        """The certificate of ``workload``: reused when still valid for this CA, else issued."""
        uri = spiffe_id(self.flow, workload)
        cert_path = os.path.join(self.directory, f"{workload}.crt")
        key_path = os.path.join(self.directory, f"{workload}.key")
        loaded = _load(cert_path, key_path)
        if loaded is None or not self._issued_here(loaded[0], uri):
            self._issue(uri, workload, cert_path, key_path)
        return WorkloadCert(spiffe_id=uri, cert=cert_path, key=key_path, ca=self.ca_cert_path)

    def _issued_here(self, cert: x509.Certificate, uri: str) -> bool:
        if not _fresh(cert) or cert.issuer != self._ca_cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self._ca_cert)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
            return False
        return uri in sans.get_values_for_type(x509.UniformResourceIdentifier)

    def _issue(self, uri: str, workload: str, cert_path: str, key_path: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshflow"),
                        x509.NameAttribute(NameOID.COMMON_NAME, f"{self.flow}/{workload}"),
                    ]
                )
            )
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        _write(cert_path, key_path, cert, key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - RENEW_BEFORE > _now()


def _load(
    cert_path: str, key_path: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        with open(cert_path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
        with open(key_path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return cert, key


def _write(
    cert_path: str, key_path: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key_path, key_bytes, 0o600)
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_private(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte on, atomically."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
