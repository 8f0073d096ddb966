"""How the gateway checks JWTs, as configured: part of a Flow's spec.

The checking itself (keys, signatures, scopes at every door) is
:class:`meshflow.gateway.auth.Authenticator`'s; this module holds only the options, so that
describing a Flow imports no JWT or cryptography library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from meshflow.errors import ConfigError

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_SOURCES = ("secret_env", "secret_file", "public_key_env", "public_key_file", "jwks_file")


@dataclass(frozen=True)
class JWTAuth:
    """How the gateway checks JWTs: keys, issuer, audience and the scope of each endpoint.

    ::

        Flow(auth=JWTAuth(secret_env='MESHFLOW_JWT_SECRET', issuer='https://id.example',
                          audience='shop',
                          scopes={'/index': 'index:write', '/search': 'search:read'}))

    Exactly one key source: an HMAC secret (``secret_env`` / ``secret_file``, HS256 by
    default), a PEM public key (``public_key_env`` / ``public_key_file``, RS256 or ES256), or
    a JWKS file (``jwks_file``: several keys, chosen by the token's ``kid``, for rotation; the
    file is read again when it changes). Secrets come from the environment or from files,
    never from the configuration itself.

    Args:
        issuer: the required ``iss`` claim.
        audience: the required ``aud`` claim (the token may list several audiences).
        algorithms: accepted ``alg`` values; all HMAC with a secret, none HMAC with public
            keys (so a public key can never be used as an HMAC secret); never ``none``.
        scopes: endpoint -> scope a token needs (in its ``scope`` or ``scp`` claim).
        default_scope: scope for endpoints not in ``scopes``; None: any valid token.
        admin_scope: scope for the ``flow`` topology query.
        leeway: seconds of clock skew allowed on ``exp`` and ``nbf``.
        cache_size: verified tokens kept (until they expire).
    """

    issuer: str
    audience: str
    secret_env: str | None = None
    secret_file: str | None = None
    public_key_env: str | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    algorithms: tuple[str, ...] = ()
    scopes: Mapping[str, str] = field(default_factory=dict, hash=False)
    default_scope: str | None = None
    admin_scope: str = "meshflow:admin"
    leeway: float = 30.0
    cache_size: int = 10_000

    def __post_init__(self) -> None:
        for name in ("issuer", "audience"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"auth: {name} is required (the token's claim must match it)")
        given = [s for s in _SOURCES if getattr(self, s)]
        if len(given) != 1:
            raise ConfigError(
                f"auth: set exactly one key source of {', '.join(_SOURCES)}; got "
                f"{', '.join(given) or 'none'}"
            )
        hmac = self.is_hmac
        algorithms = tuple(self.algorithms) or (("HS256",) if hmac else ("RS256", "ES256"))
        for alg in algorithms:
            if alg not in HMAC_ALGORITHMS + KEY_ALGORITHMS:
                raise ConfigError(
                    f"auth: algorithm {alg!r} is not accepted; use "
                    f"{', '.join(HMAC_ALGORITHMS if hmac else KEY_ALGORITHMS)}"
                )
            if (alg in HMAC_ALGORITHMS) != hmac:
                raise ConfigError(
                    f"auth: algorithm {alg} does not fit {given[0]}: an HMAC secret takes "
                    f"only {'/'.join(HMAC_ALGORITHMS)}, public keys never take them"
                )
        object.__setattr__(self, "algorithms", algorithms)
        if not isinstance(self.scopes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.scopes.items()
        ):
            raise ConfigError("auth: scopes maps endpoint names to scope strings")
        object.__setattr__(self, "scopes", {endpoint_name(k): v for k, v in self.scopes.items()})
        if isinstance(self.leeway, bool) or not isinstance(self.leeway, int | float):
            raise ConfigError("auth: leeway is a number of seconds")
        if self.leeway < 0 or self.cache_size < 0:
            raise ConfigError("auth: leeway and cache_size must not be negative")

    @property
    def is_hmac(self) -> bool:
        return bool(self.secret_env or self.secret_file)

    def scope_for(self, endpoint: str) -> str | None:
        """The scope ``endpoint`` needs, or None when any valid token will do."""
        return self.scopes.get(endpoint_name(endpoint), self.default_scope)

    def with_paths_from(self, base: str) -> JWTAuth:
        """A copy whose key files are absolute, relative ones read from ``base``."""
        changes = {}
        for name in ("secret_file", "public_key_file", "jwks_file"):
            value = getattr(self, name)
            if value and not os.path.isabs(value):
                changes[name] = os.path.abspath(os.path.join(base, value))
        if not changes:
            return self
        return JWTAuth(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["algorithms"] = list(self.algorithms)
        out["scopes"] = dict(self.scopes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JWTAuth:
        if not isinstance(data, Mapping):
            raise ConfigError("auth must be a mapping of JWTAuth options")
        for secret in SECRET_KEYS:
            if secret in data:
                raise ConfigError(
                    f"auth: {secret!r} cannot be written in a config; name where it is "
                    f"instead: {', '.join(_SOURCES)}"
                )
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"auth: unknown option(s) {', '.join(sorted(unknown))}; allowed: "
                f"{', '.join(sorted(known))}"
            )
        values = dict(data)
        if "algorithms" in values:
            algs = values["algorithms"]
            values["algorithms"] = (algs,) if isinstance(algs, str) else tuple(algs or ())
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"auth: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


SECRET_KEYS = ("secret", "key", "private_key", "public_key", "jwks")
"""Keys a config may not hold: key material is named by where it is, never written."""


def endpoint_name(name: str) -> str:
    name = name.strip()
    return "/" if name in ("", "/") else "/" + name.lstrip("/")
