"""What JWT auth costs on the GraphQL benchmark: the same Flow with auth off and on.

Two Flows of the shape of ``http_bench.py`` (``Noop -> Noop``), started side by side under the
chosen mesh: one without auth, one with ``JWTAuth`` (``--alg HS256``: a secret from the
environment; ``RS256``: a two-key JWKS file). The load is the ``post`` mutation with 1
document at concurrency 32, from a separate client process, every request carrying the same
``Authorization: Bearer`` token (as a logged-in frontend does; the gateway verifies it once
and then serves it from its cache). Rounds alternate off/on so drift hits both alike; the
table shows medians and the ratio::

    .venv/bin/python benchmarks/auth_bench.py [--mesh direct] [--alg RS256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _http_load  # noqa: E402
import _load  # noqa: E402
import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from http_bench import POST, Noop, check, graphql_body  # noqa: E402

from meshflow import Flow, JWTAuth  # noqa: E402
from meshflow.gateway.auth import mint  # noqa: E402

ISSUER, AUDIENCE = "https://id.example", "bench"


def make_auth(alg: str, tmpdir: str) -> tuple[JWTAuth, str]:
    """The JWTAuth of the secured Flow and a token it accepts."""
    if alg == "HS256":
        secret = os.urandom(32).hex()
        os.environ["MESHFLOW_BENCH_JWT_SECRET"] = secret
        auth = JWTAuth(issuer=ISSUER, audience=AUDIENCE, secret_env="MESHFLOW_BENCH_JWT_SECRET")
        key: Any = secret.encode()
        kid = None
    else:
        keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
        jwks = []
        for i, k in enumerate(keys):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key()))
            jwk.update(kid=f"k{i + 1}", alg="RS256", use="sig")
            jwks.append(jwk)
        path = os.path.join(tmpdir, "jwks.json")
        with open(path, "w") as fh:
            json.dump({"keys": jwks}, fh)
        auth = JWTAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=path)
        key, kid = keys[1], "k2"
    scopes = {"/": "bench:run"}
    auth = JWTAuth(**{**auth.to_dict(), "scopes": scopes})
    token = mint(
        key=key,
        subject="bench",
        issuer=ISSUER,
        audience=AUDIENCE,
        scopes=("bench:run",),
        ttl=3600,
        algorithm=alg,
        kid=kid,
    )
    return auth, token


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mesh", choices=["direct", "envoy"], default="direct")
    p.add_argument("--alg", choices=["HS256", "RS256"], default="RS256")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=5, help="rounds of (off, on)")
    p.add_argument("--json-out", help="also write all result lines to this file")
    args = p.parse_args()
    tmpdir = tempfile.mkdtemp(prefix="meshflow-auth-bench-")
    auth, token = make_auth(args.alg, tmpdir)
    flows = {
        "off": Flow(name="auth-off", workspace=tmpdir, mesh=args.mesh).add(uses=Noop),
        "on": Flow(name="auth-on", workspace=tmpdir, mesh=args.mesh, auth=auth).add(uses=Noop),
    }
    for f in flows.values():
        f.add(uses=Noop)
    results: list[dict[str, Any]] = []
    started: list[Flow] = []
    try:
        body = graphql_body(POST, [{"text": "hello world"}])
        path = os.path.join(tmpdir, "graphql-1.json")
        with open(path, "wb") as fh:
            fh.write(body)
        headers = {"authorization": f"Bearer {token}"}
        for f in flows.values():
            f.start()
            started.append(f)
        assert check(flows["off"].graphql_url, body)["data"]["post"]["docs"][0]["text"]
        _check_auth(flows["on"].graphql_url, body, headers)
        for rnd in range(args.repeat):
            for label, f in flows.items():
                row = _http_load.measure_http_case(
                    bench=f"meshflow-{args.mesh}-auth",
                    case=f"graphql 1-doc auth {label}",
                    docs_per_req=1,
                    url=f.graphql_url,
                    body_path=path,
                    concurrency=args.concurrency,
                    duration=args.duration,
                    warmup=args.warmup,
                    server_pids=f.pids,
                    headers=headers if label == "on" else None,
                    extra={"round": rnd + 1, "mesh": args.mesh, "alg": args.alg},
                )
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for f in reversed(started):
            f.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    agg = _http_load.aggregate(results)
    off = statistics.median(r["rps"] for r in results if r["case"].endswith("off"))
    on = statistics.median(r["rps"] for r in results if r["case"].endswith("on"))
    pairs = [
        b["rps"] / a["rps"]
        for a, b in zip(results[::2], results[1::2], strict=True)
        if a["rps"] > 0
    ]
    summary = {
        "bench": f"meshflow-{args.mesh}-auth",
        "summary": True,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "alg": args.alg,
        "versions": _load.versions("meshflow", "pyjwt", "strawberry-graphql", "grpcio"),
        "rps_off": off,
        "rps_on": on,
        "on_over_off": round(on / off, 3),
        "paired_ratio_median": round(statistics.median(pairs), 3),
    }
    _load.emit(results, agg, summary, args.json_out)
    _load.finish(
        results,
        agg,
        [
            f"JWT auth ({args.alg}, {args.mesh} mesh), GraphQL post 1 doc, c={args.concurrency}:",
            f"  off {off:.0f} req/s, on {on:.0f} req/s: on/off = {on / off:.3f} "
            f"(median of paired rounds {statistics.median(pairs):.3f}); target >= 0.90",
        ],
    )


def _check_auth(url: str, body: bytes, headers: dict[str, str]) -> None:
    import httpx

    refused = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert refused.status_code == 401, refused.text
    answer = httpx.post(url, content=body, headers={"content-type": "application/json", **headers})
    assert answer.status_code == 200 and "errors" not in answer.json(), answer.text


if __name__ == "__main__":
    main()
