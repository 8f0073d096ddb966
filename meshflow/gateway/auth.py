"""JWT authentication and scopes, one module for every door of the gateway.

Each door takes the token from where its protocol carries it (``Authorization: Bearer`` on
HTTP, the ``connection_init`` payload on a WebSocket, ``authorization`` metadata on gRPC) and
calls :meth:`Authenticator.authenticate`; the gateway then calls
:meth:`Authenticator.authorize` with the request's endpoint before any traversal starts.
Refusals raise :class:`~meshflow.errors.UnauthenticatedError` (no token, or one that fails
verification) or :class:`~meshflow.errors.ForbiddenError` (a valid token without the scope),
and log one line with the reason and the claimed subject, never the token.

Verified tokens are cached until they expire (bounded, oldest dropped first), so a client
that reuses its token pays for the signature check once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from meshflow.errors import ConfigError, ForbiddenError, UnauthenticatedError
from meshflow.identity import Identity
from meshflow.spec.auth import HMAC_ALGORITHMS, KEY_ALGORITHMS, JWTAuth
from meshflow.spec.auth import endpoint_name as _endpoint

log = logging.getLogger("meshflow.auth")

_MIN_SECRET = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: at least the hash size
REQUIRED_CLAIMS = ("exp", "iss", "aud", "sub")


def read_key_material(source: str, value: str, what: str) -> bytes:
    """The bytes of a secret or key: from environment variable ``value`` when ``source``
    ends in ``_env``, else from file ``value``; a ConfigError naming ``what`` otherwise."""
    if source.endswith("_env"):
        text = os.environ.get(value)
        if not text:
            raise ConfigError(f"auth: environment variable {value} (the {what}) is not set")
        return text.encode()
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"auth: cannot read the {what} file {value!r}: {exc.strerror}") from None


class _Keys:
    """The verification keys of a :class:`JWTAuth`, loaded at start-up (bad keys fail then)."""

    def __init__(self, config: JWTAuth) -> None:
        self.config = config
        self.single: Any = None
        self.by_kid: dict[str, tuple[Any, str | None]] = {}
        self._jwks_mtime = 0.0
        self._checked = 0.0
        self.generation = 0
        """Bumped each time the JWKS file is read again: cached verdicts are dropped then."""
        self._lock = threading.Lock()
        if config.secret_env or config.secret_file:
            source = "secret_env" if config.secret_env else "secret_file"
            secret = read_key_material(source, getattr(config, source), "JWT secret").strip()
            need = max(_MIN_SECRET[a] for a in config.algorithms)
            if len(secret) < need:
                raise ConfigError(
                    f"auth: the JWT secret has {len(secret)} bytes; {'/'.join(config.algorithms)}"
                    f" needs at least {need} (e.g. `openssl rand -hex 32`)"
                )
            self.single = secret
        elif config.public_key_env or config.public_key_file:
            source = "public_key_env" if config.public_key_env else "public_key_file"
            pem = read_key_material(source, getattr(config, source), "public key")
            try:
                self.single = load_pem_public_key(pem)
            except ValueError as exc:
                raise ConfigError(f"auth: {source} is not a PEM public key: {exc}") from None
        else:
            self._load_jwks()

    def _load_jwks(self) -> None:
        path = self.config.jwks_file
        assert path is not None
        raw = read_key_material("jwks_file", path, "JWKS")
        try:
            entries = json.loads(raw)["keys"]
            if not isinstance(entries, list):
                raise ValueError("'keys' is not a list")
            by_kid = {}
            for entry in entries:
                if entry.get("use", "sig") != "sig":
                    continue
                if entry.get("kty") == "oct":
                    raise ValueError("a JWKS of public keys cannot hold an HMAC secret (oct)")
                kid = entry.get("kid")
                if not isinstance(kid, str) or not kid:
                    raise ValueError("every key needs a 'kid'")
                by_kid[kid] = (jwt.PyJWK(entry).key, entry.get("alg"))
        except (ValueError, KeyError, TypeError, AttributeError, jwt.PyJWTError) as exc:
            raise ConfigError(f"auth: {path} is not a usable JWKS: {exc}") from None
        if not by_kid:
            raise ConfigError(f"auth: {path} holds no signing key")
        self.by_kid = by_kid
        self._jwks_mtime = os.stat(path).st_mtime
        self.generation += 1

    def key_for(self, header: Mapping[str, Any], *, read_file: bool = True) -> Any:
        """The key for a token's ``header``; an unknown ``kid`` has the JWKS file read again
        (at most once a second), unless ``read_file`` is false (on the event loop)."""
        if self.single is not None:
            return self.single
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnauthenticatedError("the token names no key (kid)")
        found = self.by_kid.get(kid)
        if found is None and read_file and self.refresh():
            found = self.by_kid.get(kid)
        if found is None:
            raise UnauthenticatedError(f"unknown key id {kid[:64]!r}")
        key, alg = found
        if alg and alg != header.get("alg"):
            raise UnauthenticatedError(f"key {kid!r} is not for algorithm {header.get('alg')}")
        return key

    def knows(self, token: str) -> bool:
        """False when ``token`` names a key id the loaded JWKS does not hold (reading the
        file again might find it); True otherwise, even for a malformed token."""
        if self.config.jwks_file is None:
            return True
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return True
        return not isinstance(kid, str) or not kid or kid in self.by_kid

    def refresh(self) -> bool:
        """Read the JWKS file again if it changed (at most once a second). Blocking: the
        event loop calls it in a thread."""
        path = self.config.jwks_file
        now = time.monotonic()
        if path is None or now - self._checked < 1.0:
            return False
        with self._lock:
            self._checked = now
            try:
                if os.stat(path).st_mtime == self._jwks_mtime:
                    return False
                self._load_jwks()
            except (OSError, ConfigError) as exc:
                log.warning("auth: keeping the keys loaded before: %s", exc)
                return False
        return True


class Authenticator:
    """Verifies tokens and checks scopes for a :class:`JWTAuth`."""

    def __init__(self, config: JWTAuth) -> None:
        self.config = config
        self.keys = _Keys(config)
        self._cache: dict[str, Identity] = {}
        self._generation = self.keys.generation
        self.refused = 0

    async def authenticate_async(self, authorization: str | None, *, door: str) -> Identity:
        """:meth:`authenticate` for the event loop: the JWKS file, when a token names a key
        not loaded yet, is read again in a thread; the loop never touches the disk."""
        token = _token_of(authorization)
        if token and not self.keys.knows(token):
            await asyncio.to_thread(self.keys.refresh)
        return self.authenticate(authorization, door=door, read_files=False)

    def authenticate(
        self, authorization: str | None, *, door: str, read_files: bool = True
    ) -> Identity:
        """The identity of an ``Authorization`` value (``Bearer <token>``, or the bare token
        where a protocol has no scheme); raises :class:`UnauthenticatedError`. With
        ``read_files`` false, the JWKS file is never read again (see
        :meth:`authenticate_async`)."""
        if not authorization or not authorization.strip():
            self._refuse(door, "no token", None)
        scheme, _, token = authorization.strip().partition(" ")
        if not token:  # a bare token, where a protocol carries no scheme
            token = "" if scheme.lower() == "bearer" else scheme
        elif scheme.lower() != "bearer":
            self._refuse(door, f"authorization scheme {scheme[:20]!r} is not Bearer", None)
        token = token.strip()
        if not token:
            self._refuse(door, "no token", None)
        if self._generation != self.keys.generation:
            self._cache.clear()  # the JWKS changed: a removed key must stop working now
            self._generation = self.keys.generation
        identity = self._cache.get(token)
        if identity is not None:
            if not identity.expired(self.config.leeway):
                return identity
            del self._cache[token]
        try:
            identity = self.verify(token) if read_files else self._verify(token, read_file=False)
        except UnauthenticatedError as exc:
            self._refuse(door, str(exc), _claimed_subject(token))
        if self.config.cache_size:
            if len(self._cache) >= self.config.cache_size:
                self._evict()
            self._cache[token] = identity
        return identity

    def verify(self, token: str) -> Identity:
        """Check ``token``'s signature and claims, uncached."""
        return self._verify(token, read_file=True)

    def _verify(self, token: str, *, read_file: bool) -> Identity:
        config = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnauthenticatedError("malformed token") from None
        alg = header.get("alg")
        if alg not in config.algorithms:
            raise UnauthenticatedError(
                f"algorithm {str(alg)[:20]!r} is not accepted (accepted: "
                f"{', '.join(config.algorithms)})"
            )
        key = self.keys.key_for(header, read_file=read_file)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=config.issuer,
                audience=config.audience,
                leeway=config.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(_reason(exc)) from None
        except (TypeError, ValueError):  # e.g. an RS256 token checked against an EC key
            raise UnauthenticatedError("the token does not fit the key") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise UnauthenticatedError("the token's sub claim is empty")
        return Identity.from_claims(claims)

    def authorize(self, identity: Identity | None, endpoint: str, *, door: str = "") -> None:
        """Refuse ``identity`` for ``endpoint`` unless it has the scope the endpoint needs."""
        self.require(identity, self.config.scope_for(endpoint), what=_endpoint(endpoint), door=door)

    def permits(self, identity: Identity | None, endpoint: str) -> bool:
        """Whether :meth:`authorize` would let ``identity`` call ``endpoint``, without logging
        or counting a refusal (the caller refuses through :meth:`authorize`)."""
        scope = self.config.scope_for(endpoint)
        return (
            identity is not None
            and not identity.expired(self.config.leeway)
            and (scope is None or identity.has_scope(scope))
        )

    def require(
        self, identity: Identity | None, scope: str | None, *, what: str, door: str = ""
    ) -> None:
        if identity is None:
            self._refuse(door, "no token", None)
        if identity.expired(self.config.leeway):
            self._refuse(door, "token expired", identity.subject)
        if scope is not None and not identity.has_scope(scope):
            self.refused += 1
            log.warning(
                "auth refused (%s): subject %r lacks scope %r for %s",
                door or "gateway",
                identity.subject,
                scope,
                what,
            )
            raise ForbiddenError(
                f"{what} needs scope {scope!r}, which the token does not grant", scope=scope
            )

    def _refuse(self, door: str, reason: str, subject: str | None) -> NoReturn:
        self.refused += 1
        log.warning(
            "auth refused (%s): %s; subject %s",
            door or "gateway",
            reason,
            repr(subject[:64]) if subject else "unknown",
        )
        raise UnauthenticatedError(reason)

    def _evict(self) -> None:
        now = time.time()
        stale = [t for t, i in self._cache.items() if i.expired(self.config.leeway, now)]
        for token in stale:
            del self._cache[token]
        while len(self._cache) >= self.config.cache_size:
            del self._cache[next(iter(self._cache))]


def _reason(exc: jwt.PyJWTError) -> str:
    reasons: list[tuple[type[jwt.PyJWTError], str]] = [
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidAlgorithmError, "algorithm not accepted"),
        (jwt.InvalidKeyError, "the token does not fit the key"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim} claim"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return f"invalid token ({type(exc).__name__})"


def _token_of(authorization: str | None) -> str:
    """The token in an ``Authorization`` value (``Bearer <token>`` or bare), or ''."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return (token or scheme).strip()


def _claimed_subject(token: str) -> str | None:
    """The ``sub`` a refused token claims, for the log line only (never trusted)."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except (jwt.PyJWTError, ValueError, AttributeError):
        return None
    return sub if isinstance(sub, str) else None


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``'90'``, ``'30s'``, ``'15m'``, ``'1h'``, ``'7d'`` -> seconds."""
    text = text.strip().lower()
    unit = _TTL_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ConfigError(f"ttl {text!r} is not a duration like 30s, 15m, 1h or 7d") from None
    if seconds <= 0:
        raise ConfigError("ttl must be positive")
    return int(seconds)


def mint(
    *,
    key: bytes | Any,
    subject: str,
    issuer: str,
    audience: str,
    scopes: tuple[str, ...] = (),
    ttl: int = 3600,
    algorithm: str = "HS256",
    kid: str | None = None,
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """Sign a token (for development and tests: production tokens come from an identity
    provider). ``key`` is the HMAC secret or a private key (PEM bytes or a key object)."""
    if algorithm not in HMAC_ALGORITHMS + KEY_ALGORITHMS:
        raise ConfigError(f"algorithm {algorithm!r} is not one meshflow accepts")
    if algorithm in HMAC_ALGORITHMS and len(key) < _MIN_SECRET[algorithm]:
        raise ConfigError(
            f"the secret has {len(key)} bytes; {algorithm} needs at least {_MIN_SECRET[algorithm]}"
        )
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {**(claims or {})}
    payload.update(sub=subject, iss=issuer, aud=audience, iat=issued, nbf=issued)
    payload["exp"] = issued + ttl
    if scopes:
        payload["scope"] = " ".join(scopes)
    headers = {"kid": kid} if kid else None
    try:
        return jwt.encode(payload, key, algorithm=algorithm, headers=headers)
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"cannot sign with {algorithm}: {exc}") from None
