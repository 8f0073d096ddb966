"""The gateway's word for who sent a request, which executors can check and nobody can forge.

The gateway verifies the caller's JWT, then *vouches* for the identity: it signs (Ed25519)
the request id, the identity and an expiry with a key only it holds, and sends the
:class:`~meshflow.proto.v1.data_request_pb2.Voucher` in the request header. Executors hold
only the public key: they accept the identity under a valid, unexpired signature for that
very request id, and refuse the request otherwise
(:class:`~meshflow.errors.UnverifiedIdentityError`, gRPC ``UNAUTHENTICATED``). A process that
can reach an executor (its unix socket, another executor) cannot make up an identity.

A local Flow makes a new key pair at each start and hands the private key to the gateway on
its standard input; exports keep it in a volume or Secret mounted only into the gateway::

    signer = Signer.generate()
    verifier = Verifier(signer.public_pem)
    voucher = signer.sign("req-1", identity)
    assert verifier.verify(voucher, "req-1") == identity
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from meshflow.errors import ConfigError, UnverifiedIdentityError
from meshflow.identity import Identity
from meshflow.proto.v1 import data_request_pb2

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography (about 7 MB of a process's memory) is imported by the code that signs or
# verifies: an executor of a Flow without auth never loads it.

VOUCHER_TTL = 300.0
"""Seconds a voucher stays valid: long enough for a request's whole traversal."""

LEEWAY = 5.0
"""Seconds of clock difference between gateway and executors tolerated on expiry."""


class Signer:
    """The gateway's signing key."""

    def __init__(self, key: Ed25519PrivateKey, *, ttl: float = VOUCHER_TTL) -> None:
        if ttl <= 0:
            raise ConfigError(f"the voucher ttl must be a positive number of seconds, got {ttl}")
        self._key = key
        self.ttl = ttl

    @classmethod
    def generate(cls, *, ttl: float = VOUCHER_TTL) -> Signer:
        """A new random key (a local Flow makes one at each start)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate(), ttl=ttl)

    @classmethod
    def from_pem(cls, pem: bytes, *, ttl: float = VOUCHER_TTL) -> Signer:
        """The key of an unencrypted PEM (PKCS#8) Ed25519 private key."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"the signing key is not an unencrypted PEM key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("the signing key must be an Ed25519 key (meshflow certs makes one)")
        return cls(key, ttl=ttl)

    @property
    def private_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_pem(self) -> bytes:
        """What executors get: it checks signatures, it cannot make them."""
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self, request_id: str, identity: Identity, *, now: float | None = None
    ) -> data_request_pb2.Voucher:
        """A voucher for ``identity`` on request ``request_id``, valid for ``ttl`` seconds."""
        vouched = data_request_pb2.Vouched(
            request_id=request_id,
            auth=identity.to_proto(),
            expires_at=(time.time() if now is None else now) + self.ttl,
        ).SerializeToString()
        return data_request_pb2.Voucher(vouched=vouched, signature=self._key.sign(vouched))

    def header_bytes(self, request_id: str, identity: Identity) -> bytes:
        """A serialized DataRequest holding only ``header.voucher``: appended to a request's
        bytes, it sets the voucher without parsing the documents (protobuf merges)."""
        header = data_request_pb2.Header(voucher=self.sign(request_id, identity))
        return data_request_pb2.DataRequest(header=header).SerializeToString()


class Verifier:
    """What an executor checks vouchers with: the gateway's public key (PEM)."""

    def __init__(self, public_pem: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        self.public_pem = public_pem
        self._key = _public_key(public_pem)
        self._invalid = InvalidSignature

    def verify(
        self, voucher: data_request_pb2.Voucher, request_id: str, *, now: float | None = None
    ) -> Identity:
        """The identity ``voucher`` vouches for on ``request_id``; raises
        :class:`UnverifiedIdentityError` when the signature, the request id or the expiry
        does not hold."""
        try:
            self._key.verify(voucher.signature, voucher.vouched)
        except self._invalid:
            raise UnverifiedIdentityError(
                "the request's identity is not signed by the gateway's key"
            ) from None
        try:
            vouched = data_request_pb2.Vouched.FromString(voucher.vouched)
        except DecodeError:  # signed, so only a broken gateway sends this
            raise UnverifiedIdentityError("the gateway's voucher is malformed") from None
        if vouched.request_id != request_id:
            raise UnverifiedIdentityError(
                "the voucher was signed for another request: identities do not carry over"
            )
        if (time.time() if now is None else now) > vouched.expires_at + LEEWAY:
            raise UnverifiedIdentityError("the gateway's voucher for this request has expired")
        return Identity.from_proto(vouched.auth)


def _public_key(pem: bytes) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the gateway's public key is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the gateway's public key must be an Ed25519 key")
    return key


def identity_of(header: data_request_pb2.Header, verifier: Verifier | None) -> Identity | None:
    """The caller an executor may believe for a request with ``header``.

    With a ``verifier`` (a Flow whose gateway checks tokens) every request must carry a
    valid voucher; without one no request may claim an identity. Raises
    :class:`UnverifiedIdentityError` otherwise.
    """
    if verifier is None:
        if header.HasField("voucher"):
            raise UnverifiedIdentityError(
                "this executor has no gateway key (--gateway-key-file): it accepts no identity"
            )
        return None
    if not header.HasField("voucher"):
        raise UnverifiedIdentityError(
            "the request carries no voucher of the gateway: executors of a Flow with auth "
            "serve only requests that came through the gateway"
        )
    return verifier.verify(header.voucher, header.request_id)
