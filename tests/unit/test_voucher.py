"""Vouchers: the gateway signs, executors verify; nothing else passes."""

from __future__ import annotations

import pytest

from meshflow.errors import ConfigError, UnauthenticatedError, UnverifiedIdentityError
from meshflow.identity import Identity
from meshflow.proto.v1 import data_request_pb2
from meshflow.voucher import LEEWAY, Signer, Verifier, identity_of

CAROL = Identity.from_claims({"sub": "carol", "scope": "search:read", "tenant": "acme"})


@pytest.fixture
def signer() -> Signer:
    return Signer.generate(ttl=60)


def test_a_signed_identity_verifies_with_the_public_key(signer: Signer) -> None:
    voucher = signer.sign("r1", CAROL)
    assert Verifier(signer.public_pem).verify(voucher, "r1") == CAROL


def test_the_public_key_cannot_sign(signer: Signer) -> None:
    with pytest.raises(ConfigError, match="not an unencrypted PEM key"):
        Signer.from_pem(signer.public_pem)


def test_a_pem_round_trip_keeps_the_key(signer: Signer) -> None:
    again = Signer.from_pem(signer.private_pem)
    assert Verifier(signer.public_pem).verify(again.sign("r", CAROL), "r") == CAROL


def test_an_expired_voucher_is_refused(signer: Signer) -> None:
    voucher = signer.sign("r1", CAROL, now=1000.0)
    verifier = Verifier(signer.public_pem)
    assert verifier.verify(voucher, "r1", now=1000.0 + 60 + LEEWAY - 1) == CAROL
    with pytest.raises(UnverifiedIdentityError, match="expired"):
        verifier.verify(voucher, "r1", now=1000.0 + 60 + LEEWAY + 1)


def test_a_voucher_does_not_carry_over_to_another_request(signer: Signer) -> None:
    with pytest.raises(UnverifiedIdentityError, match="another request"):
        Verifier(signer.public_pem).verify(signer.sign("r1", CAROL), "r2")


@pytest.mark.parametrize("part", ["vouched", "signature"])
def test_a_tampered_voucher_is_refused(signer: Signer, part: str) -> None:
    voucher = signer.sign("r1", CAROL)
    data = bytearray(getattr(voucher, part))
    data[len(data) // 2] ^= 0x01
    setattr(voucher, part, bytes(data))
    with pytest.raises(UnverifiedIdentityError, match="not signed by the gateway"):
        Verifier(signer.public_pem).verify(voucher, "r1")


def test_a_changed_identity_is_refused(signer: Signer) -> None:
    voucher = signer.sign("r1", CAROL)
    vouched = data_request_pb2.Vouched.FromString(voucher.vouched)
    vouched.auth.subject = "root"
    voucher.vouched = vouched.SerializeToString()
    with pytest.raises(UnverifiedIdentityError):
        Verifier(signer.public_pem).verify(voucher, "r1")


def test_another_key_is_refused(signer: Signer) -> None:
    stranger = Signer.generate()
    with pytest.raises(UnverifiedIdentityError):
        Verifier(signer.public_pem).verify(stranger.sign("r1", CAROL), "r1")


def test_executors_with_a_key_need_a_voucher_on_every_request(signer: Signer) -> None:
    verifier = Verifier(signer.public_pem)
    header = data_request_pb2.Header(request_id="r1")
    with pytest.raises(UnverifiedIdentityError, match="no voucher"):
        identity_of(header, verifier)
    header.voucher.CopyFrom(signer.sign("r1", CAROL))
    assert identity_of(header, verifier) == CAROL


def test_executors_without_a_key_accept_no_identity(signer: Signer) -> None:
    header = data_request_pb2.Header(request_id="r1")
    assert identity_of(header, None) is None
    header.voucher.CopyFrom(signer.sign("r1", CAROL))
    with pytest.raises(UnverifiedIdentityError, match="no gateway key"):
        identity_of(header, None)


def test_the_header_bytes_merge_into_a_request(signer: Signer) -> None:
    request = data_request_pb2.DataRequest(header=data_request_pb2.Header(request_id="r1"))
    request.docs.add(id="d1")
    merged = request.SerializeToString() + signer.header_bytes("r1", CAROL)
    header = data_request_pb2.DataRequest.FromString(merged).header
    assert identity_of(header, Verifier(signer.public_pem)) == CAROL


def test_unverified_identity_is_an_authentication_error() -> None:
    assert issubclass(UnverifiedIdentityError, UnauthenticatedError)
    assert UnverifiedIdentityError.grpc_code == "UNAUTHENTICATED"


def test_a_bad_public_key_fails_at_once() -> None:
    with pytest.raises(ConfigError, match="public key"):
        Verifier(b"not a key")
