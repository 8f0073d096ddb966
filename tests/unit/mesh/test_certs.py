"""The Flow's CA: SPIFFE identities, reuse across restarts, private keys 0600."""

from __future__ import annotations

import os
import stat

from cryptography import x509

from meshflow.mesh.certs import FlowCA


def test_identity_carries_spiffe_uri_and_is_signed_by_the_flow_ca(tmp_path: object) -> None:
    ca = FlowCA(str(tmp_path), "shop")
    ident = ca.identity("encoder")
    assert ident.spiffe_id == "spiffe://meshflow/shop/encoder"
    with open(ident.cert, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    with open(ident.ca, "rb") as fh:
        root = x509.load_pem_x509_certificate(fh.read())
    cert.verify_directly_issued_by(root)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [ident.spiffe_id]


def test_private_keys_are_0600(tmp_path: object) -> None:
    ca = FlowCA(str(tmp_path), "shop")
    ident = ca.identity("gateway")
    for path in (ident.key, ca.ca_key_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_ca_and_certificates_are_reused_across_restarts(tmp_path: object) -> None:
    first = FlowCA(str(tmp_path), "shop").identity("gateway")
    with open(first.cert, "rb") as fh:
        before = fh.read()
    again = FlowCA(str(tmp_path), "shop").identity("gateway")
    with open(again.cert, "rb") as fh:
        assert fh.read() == before


def test_certificate_of_a_replaced_ca_is_reissued(tmp_path: object) -> None:
    ident = FlowCA(str(tmp_path), "shop").identity("gateway")
    with open(ident.cert, "rb") as fh:
        before = fh.read()
    os.unlink(os.path.join(str(tmp_path), "ca.crt"))
    again = FlowCA(str(tmp_path), "shop").identity("gateway")
    with open(again.cert, "rb") as fh:
        assert fh.read() != before
