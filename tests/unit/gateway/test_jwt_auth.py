"""JWTAuth and the Authenticator: every refusal, rotation, the cache, config errors."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator

import pytest
from authkeys import (
    AUDIENCE,
    ISSUER,
    REFUSED,
    SCOPES,
    Keys,
    claims,
    key_confusion,
    public_pem,
    unsigned,
)
from authkeys import refused_tokens as all_refused

from meshflow import ConfigError, Flow, ForbiddenError, JWTAuth, UnauthenticatedError
from meshflow.gateway.auth import Authenticator, mint, parse_ttl


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.generate()


@pytest.fixture
def paths(keys: Keys, tmp_path: object) -> dict[str, str]:
    return keys.write(str(tmp_path))


@pytest.fixture
def jwks_auth(paths: dict[str, str]) -> Authenticator:
    return Authenticator(
        JWTAuth(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_file=paths["jwks"],
            scopes=SCOPES,
            default_scope="default:use",
        )
    )


@pytest.fixture
def secret_env(keys: Keys) -> Iterator[str]:
    os.environ["MESHFLOW_TEST_JWT_SECRET"] = keys.secret.hex()
    yield "MESHFLOW_TEST_JWT_SECRET"
    del os.environ["MESHFLOW_TEST_JWT_SECRET"]


def bearer(token: str | None) -> str | None:
    return None if token is None else f"Bearer {token}"


@pytest.mark.parametrize("case", REFUSED)
def test_refused_tokens(
    case: str, keys: Keys, jwks_auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    token = all_refused(keys)[case]
    with caplog.at_level(logging.WARNING, "meshflow.auth"), pytest.raises(UnauthenticatedError):
        jwks_auth.authenticate(bearer(token), door="test")
    (line,) = [r for r in caplog.records if r.name == "meshflow.auth"]
    assert line.exc_info is None
    if token:
        assert token not in line.getMessage()
        assert token.split(".")[-1] not in line.getMessage() or not token.split(".")[-1]


def test_reasons_are_specific(keys: Keys, jwks_auth: Authenticator) -> None:
    tokens = all_refused(keys)
    expected = {
        "no token": "no token",
        "malformed": "malformed token",
        "bad signature": "bad signature",
        "alg none": "algorithm 'none' is not accepted",
        "hs256 with the public key": "algorithm 'HS256' is not accepted",
        "expired": "token expired",
        "not yet valid": "token not yet valid",
        "wrong issuer": "wrong issuer",
        "wrong audience": "wrong audience",
        "unknown kid": "unknown key id 'k3'",
    }
    for case, reason in expected.items():
        with pytest.raises(UnauthenticatedError, match=reason):
            jwks_auth.authenticate(bearer(tokens[case]), door="test")


def test_refusal_log_names_the_claimed_subject(
    keys: Keys, jwks_auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "meshflow.auth"), pytest.raises(UnauthenticatedError):
        jwks_auth.authenticate(bearer(keys.token(sub="bob", aud="other")), door="http")
    assert caplog.records[-1].getMessage() == "auth refused (http): wrong audience; subject 'bob'"


def test_both_keys_of_a_rotating_jwks_are_accepted(keys: Keys, jwks_auth: Authenticator) -> None:
    for key in ("k1", "k2"):
        identity = jwks_auth.authenticate(bearer(keys.token(key, tenant="acme")), door="t")
        assert identity.subject == "alice"
        assert identity.scopes == {"index:write", "search:read"}
        assert identity.claims["tenant"] == "acme"
        assert identity.issuer == ISSUER


def test_a_key_added_to_the_jwks_file_is_picked_up(
    keys: Keys, paths: dict[str, str], jwks_auth: Authenticator
) -> None:
    token = keys.token("k3")
    with pytest.raises(UnauthenticatedError, match="unknown key id"):
        jwks_auth.authenticate(bearer(token), door="t")
    with open(paths["jwks"], "w") as fh:
        json.dump(keys.jwks("k2", "k3"), fh)  # k1 retired, k3 added
    os.utime(paths["jwks"], (time.time() + 5, time.time() + 5))
    jwks_auth.keys._checked = 0.0  # the file is looked at once a second at most
    assert jwks_auth.authenticate(bearer(token), door="t").subject == "alice"
    with pytest.raises(UnauthenticatedError, match="unknown key id 'k1'"):
        jwks_auth.authenticate(bearer(keys.token("k1")), door="t")


def test_scope_or_scp_claims(keys: Keys, jwks_auth: Authenticator) -> None:
    scp = jwks_auth.authenticate(bearer(keys.token(scope=None, scp=["index:write"])), door="t")
    jwks_auth.authorize(scp, "/index")
    with pytest.raises(ForbiddenError, match="/search needs scope 'search:read'") as err:
        jwks_auth.authorize(scp, "search")
    assert err.value.scope == "search:read"
    with pytest.raises(ForbiddenError, match="default:use"):
        jwks_auth.authorize(scp, "/unlisted")
    with pytest.raises(UnauthenticatedError, match="no token"):
        jwks_auth.authorize(None, "/index")


def test_any_valid_token_passes_unlisted_endpoints_without_default_scope(
    keys: Keys, paths: dict[str, str]
) -> None:
    auth = Authenticator(JWTAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=paths["jwks"]))
    auth.authorize(auth.authenticate(bearer(keys.token(scope=None)), door="t"), "/anything")


def test_verification_is_cached_until_expiry(keys: Keys, jwks_auth: Authenticator) -> None:
    token = keys.token()
    calls = []
    verify = jwks_auth.verify

    def counting(t: str) -> object:
        calls.append(t)
        return verify(t)

    jwks_auth.verify = counting  # type: ignore[method-assign]
    for _ in range(5):
        jwks_auth.authenticate(bearer(token), door="t")
    assert len(calls) == 1
    cached = jwks_auth._cache[token]
    # once the cached verdict is past its exp (and the leeway), the token is checked anew
    object.__setattr__(cached, "claims", {**cached.claims, "exp": time.time() - 60})
    with pytest.raises(UnauthenticatedError, match="token expired"):
        jwks_auth.authorize(cached, "/index")
    jwks_auth.authenticate(bearer(token), door="t")
    assert len(calls) == 2


def test_the_cache_is_bounded(keys: Keys, paths: dict[str, str]) -> None:
    auth = Authenticator(
        JWTAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=paths["jwks"], cache_size=3)
    )
    for i in range(10):
        auth.authenticate(bearer(keys.token(sub=f"user{i}")), door="t")
    assert len(auth._cache) <= 3


def test_hmac_secret(keys: Keys, secret_env: str) -> None:
    auth = Authenticator(JWTAuth(issuer=ISSUER, audience=AUDIENCE, secret_env=secret_env))
    assert auth.authenticate(bearer(keys.token("secret")), door="t").subject == "alice"
    # a token signed with the right secret but another HMAC size is not accepted either
    with pytest.raises(UnauthenticatedError, match="HS512"):
        auth.authenticate(
            bearer(
                mint(
                    key=keys.secret.hex().encode() * 2,
                    subject="a",
                    issuer=ISSUER,
                    audience=AUDIENCE,
                    algorithm="HS512",
                )
            ),
            door="t",
        )
    # an RS256 token against an HMAC config
    with pytest.raises(UnauthenticatedError, match="RS256"):
        auth.authenticate(bearer(keys.token("k1")), door="t")


def test_pem_public_keys(keys: Keys, paths: dict[str, str]) -> None:
    rsa_auth = Authenticator(
        JWTAuth(issuer=ISSUER, audience=AUDIENCE, public_key_file=paths["rsa_pem"])
    )
    assert rsa_auth.authenticate(bearer(keys.token("k1", kid="")), door="t").subject == "alice"
    with pytest.raises(UnauthenticatedError, match="bad signature"):
        rsa_auth.authenticate(bearer(keys.token("k2", kid="")), door="t")
    with pytest.raises(UnauthenticatedError, match="'HS256' is not accepted"):
        rsa_auth.authenticate(bearer(key_confusion(public_pem(keys.k1), claims())), door="t")
    ec_auth = Authenticator(
        JWTAuth(issuer=ISSUER, audience=AUDIENCE, public_key_file=paths["ec_pem"])
    )
    assert ec_auth.authenticate(bearer(keys.token("ec")), door="t").subject == "alice"
    with pytest.raises(UnauthenticatedError):  # an RSA signature against the EC key
        ec_auth.authenticate(bearer(keys.token("k1", kid="")), door="t")


def test_authorization_values(keys: Keys, jwks_auth: Authenticator) -> None:
    token = keys.token()
    assert jwks_auth.authenticate(token, door="t").subject == "alice"  # bare, e.g. WS payload
    assert jwks_auth.authenticate(f"bearer  {token}", door="t").subject == "alice"
    with pytest.raises(UnauthenticatedError, match="not Bearer"):
        jwks_auth.authenticate(f"Basic {token}", door="t")
    with pytest.raises(UnauthenticatedError, match="no token"):
        jwks_auth.authenticate("Bearer ", door="t")
    with pytest.raises(UnauthenticatedError, match="sub"):
        jwks_auth.authenticate(keys.token(sub=None), door="t")
    with pytest.raises(UnauthenticatedError, match="exp"):
        jwks_auth.authenticate(keys.token(exp=None), door="t")


def test_alg_none_is_never_configurable(paths: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="'none' is not accepted"):
        JWTAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=paths["jwks"], algorithms=("none",))
    assert unsigned(claims()).endswith(".")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secret_env": "X", "algorithms": ("RS256",)}, "does not fit secret_env"),
        ({"public_key_file": "k.pem", "algorithms": ("HS256",)}, "does not fit public_key_file"),
        ({}, "exactly one key source"),
        ({"secret_env": "X", "jwks_file": "j"}, "exactly one key source"),
        ({"secret_env": "X", "issuer": ""}, "issuer is required"),
        ({"secret_env": "X", "leeway": -1}, "must not be negative"),
        ({"secret_env": "X", "scopes": {"/a": ""}}, "scopes maps endpoint"),
    ],
)
def test_config_errors(options: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"issuer": ISSUER, "audience": AUDIENCE, **options}
    with pytest.raises(ConfigError, match=message):
        JWTAuth(**values)  # type: ignore[arg-type]


def test_keys_are_loaded_at_start(tmp_path: object, secret_env: str) -> None:
    with pytest.raises(ConfigError, match=r"MESHFLOW_UNSET_SECRET .* is not set"):
        Authenticator(JWTAuth(issuer="i", audience="a", secret_env="MESHFLOW_UNSET_SECRET"))
    os.environ[secret_env] = "short"
    with pytest.raises(ConfigError, match="has 5 bytes; HS256 needs at least 32"):
        Authenticator(JWTAuth(issuer="i", audience="a", secret_env=secret_env))
    bad = os.path.join(str(tmp_path), "bad.json")
    with open(bad, "w") as fh:
        json.dump({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}, fh)
    with pytest.raises(ConfigError, match="cannot hold an HMAC secret"):
        Authenticator(JWTAuth(issuer="i", audience="a", jwks_file=bad))
    with pytest.raises(ConfigError, match="cannot read the JWKS file"):
        Authenticator(JWTAuth(issuer="i", audience="a", jwks_file=bad + ".missing"))


def test_secrets_cannot_be_written_in_a_config() -> None:
    with pytest.raises(ConfigError, match="'secret' cannot be written in a config"):
        JWTAuth.from_dict({"issuer": "i", "audience": "a", "secret": "hunter2"})
    with pytest.raises(ConfigError, match="unknown option"):
        JWTAuth.from_dict({"issuer": "i", "audience": "a", "secret_env": "X", "colour": 1})


def test_flow_yaml_auth_with_paths_relative_to_the_file(
    paths: dict[str, str], tmp_path: object
) -> None:
    path = os.path.join(str(tmp_path), "flow.yml")
    with open(path, "w") as fh:
        fh.write(
            "jtype: Flow\nwith:\n  auth:\n    issuer: https://id.example\n    audience: shop\n"
            "    jwks_file: jwks.json\n    scopes: {/index: index:write}\n    leeway: 0\n"
            "executors:\n  - uses: executors:Guarded\n"
        )
    flow = Flow.load_config(path)
    assert flow.auth is not None
    assert flow.auth.jwks_file == paths["jwks"]
    assert flow.auth.scope_for("index") == "index:write"
    again = os.path.join(str(tmp_path), "again.yml")
    flow.save_config(again)
    assert Flow.load_config(again).auth == flow.auth
    with open(path, "w") as fh:
        fh.write(
            "with:\n  auth:\n    issuer: i\n    audience: a\n    secret: hunter2\n"
            "executors:\n  - uses: executors:Guarded\n"
        )
    with pytest.raises(
        ConfigError, match=r"flow.yml:5: with.auth.secret: key material cannot be written"
    ):
        Flow.load_config(path)


def test_parse_ttl() -> None:
    assert [parse_ttl(t) for t in ("90", "30s", "15m", "1h", "7d")] == [90, 30, 900, 3600, 604800]
    for bad in ("", "1x", "-5m", "h"):
        with pytest.raises(ConfigError):
            parse_ttl(bad)


def test_on_the_event_loop_the_jwks_file_is_read_in_a_thread(
    keys: Keys,
    paths: dict[str, str],
    jwks_auth: Authenticator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import threading

    import meshflow.gateway.auth as auth_module

    readers: list[threading.Thread] = []
    read = auth_module.read_key_material

    def recording(*args: str) -> bytes:
        readers.append(threading.current_thread())
        return read(*args)

    monkeypatch.setattr(auth_module, "read_key_material", recording)
    with open(paths["jwks"], "w") as fh:
        json.dump(keys.jwks("k2", "k3"), fh)  # k3 added
    os.utime(paths["jwks"], (time.time() + 5, time.time() + 5))
    jwks_auth.keys._checked = 0.0

    async def main() -> None:
        loop_thread = threading.current_thread()
        identity = await jwks_auth.authenticate_async(bearer(keys.token("k3")), door="t")
        assert identity.subject == "alice"
        assert readers and all(t is not loop_thread for t in readers)
        readers.clear()
        # A known key, or a token that is no JWT at all: no file read, no thread.
        await jwks_auth.authenticate_async(bearer(keys.token("k2")), door="t")
        with pytest.raises(UnauthenticatedError):
            await jwks_auth.authenticate_async(bearer("not-a-token"), door="t")
        assert readers == []

    asyncio.run(asyncio.wait_for(main(), 20))
