"""What vouching costs per request: the gateway signs one voucher (Ed25519 over request id,
identity and expiry) and appends it to the request's bytes; each executor that runs an
endpoint parses the header and verifies it. Measured in-process, for a typical identity
(a JWT's subject, scopes, issuer and a few claims) and a 1 KiB request::

    .venv/bin/python benchmarks/voucher_bench.py [--n 20000] [--repeat 5]

Prints microseconds per operation (median of the repeats) and the voucher's size.
"""

from __future__ import annotations

import argparse
import statistics
import time

from meshflow.identity import Identity
from meshflow.proto.v1 import data_request_pb2
from meshflow.voucher import Signer, Verifier, identity_of

IDENTITY = Identity.from_claims(
    {
        "sub": "carol@example.com",
        "scope": "index:write search:read",
        "iss": "https://id.example",
        "aud": "shop",
        "exp": 2_000_000_000,
        "iat": 1_900_000_000,
        "tenant": "acme",
    }
)


def _per_op(fn: object, n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(n):
            fn(i)  # type: ignore[operator]
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    signer = Signer.generate()
    verifier = Verifier(signer.public_pem)
    request = data_request_pb2.DataRequest(header=data_request_pb2.Header(endpoint="/search"))
    request.docs.add(id="d1", text="x" * 1000)
    body = request.SerializeToString()
    signed = [body + signer.header_bytes(f"r{i}", IDENTITY) for i in range(min(args.n, 1000))]

    def sign(i: int) -> None:
        body + signer.header_bytes(f"r{i}", IDENTITY)

    def verify(i: int) -> None:
        data = signed[i % len(signed)]
        head = data_request_pb2.DataRequestHead.FromString(data)
        head.header.request_id = f"r{i % len(signed)}"
        identity_of(head.header, verifier)

    heads = [data_request_pb2.DataRequestHead.FromString(d) for d in signed]
    for i, head in enumerate(heads):
        head.header.request_id = f"r{i}"

    def verify_only(i: int) -> None:
        head = heads[i % len(heads)]
        verifier.verify(head.header.voucher, head.header.request_id)

    size = len(signer.header_bytes("r0", IDENTITY))
    sign_us = _per_op(sign, args.n, args.repeat)
    verify_us = _per_op(verify, args.n, args.repeat)
    verify_only_us = _per_op(verify_only, args.n, args.repeat)
    print(f"voucher: {size} bytes on the wire (identity with 7 claims)")
    print(f"gateway, sign + append to a 1 KiB request: {sign_us:7.1f} us")
    print(f"executor, parse header + verify:           {verify_us:7.1f} us")
    print(f"executor, Ed25519 verify + checks only:     {verify_only_us:7.1f} us")
    print(f"per request through 2 executors:           {sign_us + 2 * verify_us:7.1f} us")


if __name__ == "__main__":
    main()
