"""Attacks a running Flow the way issue 14 did, and prints what each costs the gateway.

One Flow (``Append``, direct mesh, GraphQL on) is started; then, each against it:

1. **fragment bombs** (ten spreads per level, 7, 9 and 12 levels, 646 bytes at 7): time to
   the refusal, and its code;
2. **normal requests under attack**: p50 of a GraphQL ``post`` and of a gRPC ``Post`` with the
   gateway idle, then while two attacker processes (from their own addresses, 127.0.0.2 and
   127.0.0.3) send bombs (and 2 MiB comments) as fast as they are answered; the ratio is the
   must-hold "under 2x". The gateway slows down a client whose queries it keeps refusing
   (GraphQLLimits.refusals_per_second), so the attackers get what that allows;
3. **memory**: growth of the gateway's peak RSS (VmHWM) over requests of about 1 MiB built
   to make it allocate (sub-array dtypes, huge shapes, 350k empty documents, 350k empty
   stream batches, wide parameters, deep variables); then, on a Flow with JWT auth, ten
   unauthenticated 60 MiB gRPC posts and five refused (wrong scope) 1000-document GraphQL
   posts;
4. **restart**: with an HTTP keep-alive connection open, the gateway is SIGKILLed; the time
   until ``/health`` answers again (the supervisor restarts it on the same ports).

::

    .venv/bin/python benchmarks/attack_bench.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from meshflow import Flow, JWTAuth, mint_token  # noqa: E402
from meshflow.proto.v1 import data_request_pb2  # noqa: E402
from meshflow.wire import GATEWAY_POST  # noqa: E402

POST = 'mutation($docs: [DocumentInput!]) { post(on: "/", docs: $docs) { docs { text } } }'
MIB = 1 << 20
SECRET = "b" * 32


def fragment_bomb(levels: int, width: int = 10) -> str:
    parts = ["fragment F0 on Query { __typename }"]
    for i in range(1, levels + 1):
        parts.append(f"fragment F{i} on Query {{ " + " ".join([f"...F{i - 1}"] * width) + " }")
    return f"query {{ ...F{levels} }} " + " ".join(parts)


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def codes(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return [f"HTTP {response.status_code}"]
    return [e.get("extensions", {}).get("code", "?") for e in body.get("errors", [])] or ["ok"]


# -- 1. bombs ----------------------------------------------------------------------------------


def client_from(address: str, timeout: float) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (any of 127.0.0.0/8): the
    gateway counts refusals per client address."""
    return httpx.Client(timeout=timeout, transport=httpx.HTTPTransport(local_address=address))


def bombs(url: str) -> list[dict[str, Any]]:
    """The cost of one refusal: each level's bombs come from an address of their own, within
    the refusals a client may have at once (GraphQLLimits.refusal_burst)."""
    rows = []
    for levels in (7, 9, 12):
        query = fragment_bomb(levels)
        times, answer = [], []
        with client_from(f"127.0.1.{levels}", 120) as client:
            for _ in range(15):
                started = time.perf_counter()
                answer = codes(client.post(url, json={"query": query}))
                times.append(time.perf_counter() - started)
            rows.append(
                {
                    "levels": levels,
                    "bytes": len(query),
                    "expanded fields": 10**levels,
                    "p50 ms": round(statistics.median(times) * 1e3, 2),
                    "max ms": round(max(times) * 1e3, 2),
                    "answer": ",".join(answer),
                }
            )
    return rows


# -- 2. normal requests under attack ------------------------------------------------------------


def attacker(url: str, address: str, stop: Any, sent: Any, held: Any, comments: bool) -> None:
    """Sends bombs of 7, 9 and 12 levels from ``address``, each made new (a counter in a
    comment, so that no cache of the gateway answers it), as fast as they are answered; with
    ``comments``, a query with a 2 MiB comment too."""
    n = 0
    with client_from(address, 120) as client:
        while not stop.is_set():
            for levels in (7, 9, 12, 0):
                n += 1
                if levels:
                    query = f"{fragment_bomb(levels)} # {os.getpid()} {n}"
                elif comments:
                    query = "{ __typename } #" + "x" * (2 * MIB)
                else:
                    continue
                body = json.dumps({"query": query})
                headers = {"content-type": "application/json"}
                answer = client.post(url, content=body, headers=headers)
                with sent.get_lock():
                    sent.value += 1
                if answer.status_code == 429:
                    with held.get_lock():
                        held.value += 1


def latencies(call: Callable[[], None], rounds: int) -> float:
    for _ in range(10):
        call()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def under_attack(
    flow: Flow, rounds: int, comments: bool, addresses: tuple[str, ...] = ("127.0.0.2", "127.0.0.3")
) -> dict[str, Any]:
    http = httpx.Client(timeout=60)
    channel = grpc.insecure_channel(f"127.0.0.1:{flow.port}")
    post = channel.unary_unary(GATEWAY_POST)
    request = data_request_pb2.DataRequest()
    request.header.endpoint = "/"
    request.docs.add(text="a")
    raw = request.SerializeToString()
    graphql = {"query": POST, "variables": {"docs": [{"text": "a"}]}}

    refused: list[int] = []

    def gql() -> None:
        answer = http.post(flow.graphql_url, json=graphql)
        if answer.status_code == 429:  # only when it shares the attackers' address
            refused.append(1)
        else:
            assert answer.json()["data"]["post"]

    def rpc() -> None:
        post(raw, timeout=60)

    idle = {"graphql": latencies(gql, rounds), "grpc": latencies(rpc, rounds)}
    stop = multiprocessing.Event()
    sent = multiprocessing.Value("l", 0)
    held = multiprocessing.Value("l", 0)
    attackers = [
        multiprocessing.Process(
            target=attacker, args=(flow.graphql_url, address, stop, sent, held, comments)
        )
        for address in addresses
    ]
    for proc in attackers:
        proc.start()
    time.sleep(1.0)
    started, before, held_before = time.monotonic(), sent.value, held.value
    attacked = {"graphql": latencies(gql, rounds), "grpc": latencies(rpc, rounds)}
    elapsed = time.monotonic() - started
    rate = (sent.value - before) / elapsed
    held_rate = (held.value - held_before) / elapsed
    stop.set()
    for proc in attackers:
        proc.join(timeout=60)
    http.close()
    channel.close()
    return {
        door: {
            "idle p50 ms": round(idle[door], 2),
            "attacked p50 ms": round(attacked[door], 2),
            "ratio": round(attacked[door] / idle[door], 2),
        }
        for door in idle
    } | {
        "attack requests/s": round(rate, 1),
        "of which 429/s": round(held_rate, 1),
        "normal GraphQL requests answered 429": len(refused),
    }


# -- 3. memory ----------------------------------------------------------------------------------


def hostile() -> dict[str, dict[str, Any]]:
    many = MIB // 3 - 100
    stream = 'subscription($b: [[DocumentInput!]!]!) { stream(on: "/", batches: $b) { batch } }'
    params = 'mutation($p: JSON) { post(on: "/", parameters: $p) { requestId } }'
    return {
        "sub-array dtype (4000,4000)f8": {
            "query": POST,
            "variables": {"docs": [{"tensor": {"data": [1], "dtype": "(4000,4000)f8"}}] * 100},
        },
        "shape [1e5, 1e5]": {
            "query": POST,
            "variables": {"docs": [{"tensor": {"data": [1], "shape": [100000, 100000]}}] * 100},
        },
        "350k empty documents": {"query": POST, "variables": {"docs": [{}] * many}},
        "350k empty stream batches": {"query": stream, "variables": {"b": [[]] * many}},
        "524k parameters": {"query": params, "variables": {"p": {"n": [0] * (MIB // 2 - 100)}}},
        "variables nested 900 deep": {
            "query": params,
            "variables": {"p": json.loads("[" * 900 + "]" * 900)},
        },
    }


def memory(flow: Flow) -> list[dict[str, Any]]:
    pid = flow.describe()["gateway"]["pid"]
    rows = []
    with httpx.Client(timeout=120) as client:
        client.post(flow.graphql_url, json={"query": POST, "variables": {"docs": [{}]}})
        for name, payload in hostile().items():
            body = json.dumps(payload, separators=(",", ":")).encode()
            before = peak_rss(pid)
            answer = client.post(
                flow.graphql_url, content=body, headers={"content-type": "application/json"}
            )
            rows.append(
                {
                    "request": name,
                    "KiB": len(body) // 1024,
                    "peak RSS growth MiB": round((peak_rss(pid) - before) / MIB, 1),
                    "answer": ",".join(codes(answer)),
                }
            )
    return rows


def memory_with_auth(workdir: str) -> list[dict[str, Any]]:
    os.environ["ATTACK_BENCH_SECRET"] = SECRET
    auth = JWTAuth(
        secret_env="ATTACK_BENCH_SECRET",
        issuer="https://id.example",
        audience="bench",
        scopes={"/index": "index:write", "/search": "search:read"},
    )
    flow = Flow(
        mesh="direct",
        auth=auth,
        max_request_bytes=100 * MIB,
        workspace=os.path.join(workdir, "ws-auth"),
    ).add(uses="executors:Append")
    rows = []
    with flow:
        pid = flow.describe()["gateway"]["pid"]
        request = data_request_pb2.DataRequest()
        request.header.endpoint = "/search"
        request.docs.add(blob=b"\0" * (60 * MIB))
        raw = request.SerializeToString()
        options = [("grpc.max_send_message_length", 100 * MIB)]
        with grpc.insecure_channel(f"127.0.0.1:{flow.port}", options=options) as channel:
            post = channel.unary_unary(GATEWAY_POST)
            before = peak_rss(pid)
            refused = set()
            for _ in range(10):
                try:
                    post(raw, timeout=60)
                except grpc.RpcError as exc:
                    refused.add(exc.code().name)
            rows.append(
                {
                    "request": "10 unauthenticated 60 MiB gRPC posts",
                    "KiB": len(raw) // 1024,
                    "peak RSS growth MiB": round((peak_rss(pid) - before) / MIB, 1),
                    "answer": ",".join(sorted(refused)),
                }
            )
        reader = mint_token(
            key=SECRET.encode(),
            subject="reader",
            issuer="https://id.example",
            audience="bench",
            scopes=("search:read",),
        )
        docs = [{"embedding": {"data": [0.5] * 512, "dtype": "float64"}}] * 1000
        body = {
            "query": 'mutation($d: [DocumentInput!]) { post(on: "/index", docs: $d) '
            "{ requestId } }",
            "variables": {"d": docs},
        }
        with httpx.Client(timeout=60, headers={"authorization": f"Bearer {reader}"}) as client:
            client.post(flow.graphql_url, json={"query": "{ __typename }"})
            before = peak_rss(pid)
            answers = {",".join(codes(client.post(flow.graphql_url, json=body))) for _ in range(5)}
            rows.append(
                {
                    "request": "5 refused /index posts of 1000 x 512-d (reader token)",
                    "KiB": len(json.dumps(body)) // 1024,
                    "peak RSS growth MiB": round((peak_rss(pid) - before) / MIB, 1),
                    "answer": ",".join(sorted(answers)),
                }
            )
    return rows


# -- 4. restart ---------------------------------------------------------------------------------


def restart(flow: Flow) -> dict[str, Any]:
    """Each restart after the gateway has been up long enough for the supervisor to forget
    the previous one (its crash-loop backoff starts again at 0.2 s)."""
    from meshflow.processes import BACKOFF_START, STABLE_AFTER

    health = flow.graphql_url.replace("/graphql", "/health")
    times = []
    for _ in range(3):
        with httpx.Client(timeout=5) as keep_alive:
            keep_alive.get(health)  # stays open while the gateway dies
            pid = flow.describe()["gateway"]["pid"]
            started = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    if httpx.get(health, timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.01)
                if time.monotonic() - started > 120:
                    raise SystemExit("the gateway did not come back within 120 s")
            times.append(time.monotonic() - started)
            time.sleep(STABLE_AFTER + 1)
    return {
        "restarts": len(times),
        "supervisor delay s": BACKOFF_START,
        "median s": round(statistics.median(times), 2),
        "max s": round(max(times), 2),
    }


def table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="requests per p50")
    args = parser.parse_args()
    print(
        f"# attack_bench {time.strftime('%Y-%m-%d')} on {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}\n"
    )
    with tempfile.TemporaryDirectory() as workdir:
        flow = Flow(mesh="direct", workspace=os.path.join(workdir, "ws")).add(
            uses="executors:Append"
        )
        with flow:
            print("## 1. fragment bombs\n")
            table(bombs(flow.graphql_url))
            print("## 2. normal requests while two processes send fragment bombs\n")
            print(json.dumps(under_attack(flow, args.rounds, False), indent=2), "\n")
            print("## 2b. the same, the attackers adding 2 MiB comments\n")
            print(json.dumps(under_attack(flow, args.rounds, True), indent=2), "\n")
            print("## 2c. the attackers on the normal client's own address (127.0.0.1)\n")
            # Few rounds: each GraphQL request waits its turn behind the attackers' refusals.
            same = under_attack(flow, 40, False, ("127.0.0.1", "127.0.0.1"))
            print(json.dumps(same, indent=2), "\n")
            time.sleep(6)  # the address's turn comes back
            print("## 3. memory\n")
            table(memory(flow))
            print("## 4. restart with a keep-alive connection open\n")
            print(json.dumps(restart(flow), indent=2), "\n")
        print("## 3b. memory before auth\n")
        table(memory_with_auth(workdir))


if __name__ == "__main__":
    main()
