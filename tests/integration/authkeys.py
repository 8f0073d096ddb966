"""Keys and tokens for the auth tests: a rotating JWKS of two RSA keys, a stranger's key, an
HMAC secret, and hand-made attack tokens (``alg: none``, HS256 signed with the public key)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://id.example"
AUDIENCE = "shop"
SCOPES = {"/index": "index:write", "/search": "search:read", "/calls": "meshflow:admin"}
REFUSED = [
    "no token",
    "malformed",
    "bad signature",
    "signed by a stranger",
    "alg none",
    "hs256 with the public key",
    "expired",
    "not yet valid",
    "wrong issuer",
    "wrong audience",
    "unknown kid",
]
"""The cases of :func:`refused_tokens`."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Keys:
    """Two RSA keys published in a JWKS (k1, k2), one unpublished (k3), one EC key."""

    k1: rsa.RSAPrivateKey
    k2: rsa.RSAPrivateKey
    k3: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    secret: bytes

    @classmethod
    def generate(cls) -> Keys:
        def rsa_key() -> rsa.RSAPrivateKey:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)

        return cls(
            rsa_key(), rsa_key(), rsa_key(), ec.generate_private_key(ec.SECP256R1()), os.urandom(32)
        )

    def jwks(self, *names: str) -> dict[str, Any]:
        keys = []
        for name in names or ("k1", "k2"):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(getattr(self, name).public_key()))
            jwk.update(kid=name, alg="RS256", use="sig")
            keys.append(jwk)
        return {"keys": keys}

    def write(self, folder: str) -> dict[str, str]:
        """Write the JWKS (k1, k2), PEM public keys and the secret; return their paths."""
        paths = {
            "jwks": os.path.join(folder, "jwks.json"),
            "rsa_pem": os.path.join(folder, "k1.pem"),
            "ec_pem": os.path.join(folder, "ec.pem"),
            "secret": os.path.join(folder, "secret"),
        }
        with open(paths["jwks"], "w") as fh:
            json.dump(self.jwks(), fh)
        for name, key in (("rsa_pem", self.k1), ("ec_pem", self.ec)):
            with open(paths[name], "wb") as fh:
                fh.write(public_pem(key))
        with open(paths["secret"], "wb") as fh:
            fh.write(self.secret.hex().encode())
        return paths

    def token(
        self,
        key: str = "k1",
        *,
        kid: str | None = None,
        scope: str | None = "index:write search:read",
        alg: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "sub": "alice",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
        }
        if scope is not None:
            payload["scope"] = scope
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        signing: Any = getattr(self, key)
        if key == "secret":
            signing = self.secret.hex().encode()
        default_alg = {"secret": "HS256", "ec": "ES256"}.get(key, "RS256")
        headers = {"kid": kid if kid is not None else key} if key.startswith("k") else None
        if kid == "":
            headers = None
        return jwt.encode(payload, signing, algorithm=alg or default_alg, headers=headers)


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def key_confusion(public_key_pem: bytes, payload: dict[str, Any], kid: str = "k1") -> str:
    """HS256 signed with the RSA public key as the HMAC secret: the classic attack."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(public_key_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {
        "sub": "mallory",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 600,
        "scope": "index:write search:read meshflow:admin",
    }
    out.update(extra)
    return out


def refused_tokens(keys: Keys) -> dict[str, str | None]:
    """Every token the gateway must refuse as unauthenticated, by case name."""
    now = int(time.time())
    tampered = keys.token()
    head, _body, sig = tampered.split(".")
    forged_body = _b64(json.dumps(claims(sub="alice")).encode())
    return {
        "no token": None,
        "malformed": "not-a-jwt",
        "bad signature": f"{head}.{forged_body}.{sig}",
        "signed by a stranger": keys.token("k3", kid="k1"),
        "alg none": unsigned(claims()),
        "hs256 with the public key": key_confusion(public_pem(keys.k1), claims()),
        "expired": keys.token(exp=now - 3600, iat=now - 7200),
        "not yet valid": keys.token(nbf=now + 3600),
        "wrong issuer": keys.token(iss="https://evil.example"),
        "wrong audience": keys.token(aud="other"),
        "unknown kid": keys.token("k3"),
    }
