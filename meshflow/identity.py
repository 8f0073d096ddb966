"""Who sent a request: the identity the gateway verified, as executors receive it.

When a Flow checks JWTs (``Flow(auth=JWTAuth(...))``), the gateway vouches for the token's
subject, scopes and claims in the request header (signed: :mod:`meshflow.voucher`), and
executors believe nothing else; an endpoint that takes an ``auth`` argument gets an
:class:`Identity` (or None on a Flow without auth)::

    @requests(on='/search')
    def search(self, docs, auth=None, **kwargs):
        tenant = auth.claims.get('tenant') if auth else None
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshflow.document.proto import dict_to_struct, struct_to_dict
from meshflow.proto.v1 import data_request_pb2


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes a token grants: ``scope`` (space-separated, RFC 8693) or ``scp`` (a list
    or a space-separated string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list | tuple):
            found.update(str(v) for v in value if isinstance(v, str))
    return frozenset(found)


@dataclass(frozen=True)
class Identity:
    """The verified caller of a request."""

    subject: str
    scopes: frozenset[str] = frozenset()
    issuer: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Every claim of the token (``sub``, ``aud``, ``exp``, custom ones such as ``tenant``)."""

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Identity:
        return cls(
            subject=str(claims.get("sub", "")),
            scopes=scopes_of(claims),
            issuer=str(claims.get("iss", "")),
            claims=dict(claims),
        )

    @property
    def expires_at(self) -> float | None:
        """The token's ``exp`` (seconds since the epoch), if it has one."""
        exp = self.claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None

    def expired(self, leeway: float = 0.0, now: float | None = None) -> bool:
        exp = self.expires_at
        return exp is not None and (time.time() if now is None else now) > exp + leeway

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        return all(s in self.scopes for s in scopes)

    def to_proto(self) -> data_request_pb2.Auth:
        return data_request_pb2.Auth(
            subject=self.subject,
            scopes=sorted(self.scopes),
            issuer=self.issuer,
            claims=dict_to_struct(dict(self.claims)),
        )

    @classmethod
    def from_proto(cls, pb: data_request_pb2.Auth) -> Identity:
        return cls(
            subject=pb.subject,
            scopes=frozenset(pb.scopes),
            issuer=pb.issuer,
            claims=struct_to_dict(pb.claims),
        )
