"""Jina 3.x comparison benchmark: gateway + 2 chained no-op Executors.

Run it INSIDE the Jina venv and INSIDE a loopback-only network namespace (Jina
looks up the public IP and sends telemetry otherwise); ``run_jina_flow.sh``
does both::

    bash benchmarks/run_jina_flow.sh [--duration 5 --warmup 1]

What it measures:

* start-up: ``Flow(protocol='grpc', port=P).add(uses=Noop).add(uses=Noop)``
  constructed and started until ready (imports excluded), and the close time;
* load, from a SEPARATE client process (``_load.py``, raw grpc.aio, bytes in /
  bytes out on ``/jina.JinaSingleDataRequestRPC/process_single_data``, with the
  request serialized once here by Jina's own ``DataRequest``): 1-doc requests
  (short text) and 64-doc requests whose docs carry 512-d float32 embeddings,
  each at concurrency 1 and 32 -> requests/s, docs/s, p50/p99 ms;
* memory: summed peak RSS (VmHWM) of the Flow's child processes (gateway +
  executors), plus their summed PSS (shared pages counted once).

With ``--protocol http`` the Flow is ``Flow(protocol='http', port=P)`` (same executors) and the
load is its REST door instead: ``POST /default`` (with docarray v2 Jina serves one route per
endpoint, ``/default`` for a bare ``@requests``; ``/post`` exists only with docarray v1) with
the JSON body ``{"data": [{"text": "hello world"}]}``, from ``_http_load.py`` (httpx,
HTTP/1.1 keep-alive, one connection per worker) run by ``--client-python`` (default: this
interpreter, which then needs httpx) inside the same network namespace; 1 doc at concurrency
1 and 32, with the server CPU per request of each process (gateway, executors)::

    bash benchmarks/run_jina_flow.sh --protocol http --client-python .venv/bin/python
"""

# No "from __future__ import annotations": Jina/pydantic read the Executor's
# annotations at run time.
import argparse
import json
import os
import socket
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _http_load  # noqa: E402  (stdlib; httpx only in the client process)
import _load  # noqa: E402  (stdlib + grpc only)

# Must be set before jina is imported.
os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_HIDE_SURVEY", "1")
os.environ.setdefault("JINA_DEFAULT_HOST", "127.0.0.1")  # servers bind loopback only
os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")

METHOD = "/jina.JinaSingleDataRequestRPC/process_single_data"
CASES = [  # (name, docs per request, embedding dim or 0)
    ("1-doc", 1, 0),
    ("64-doc-512d", 64, 512),
]
CONCURRENCIES = [1, 32]
HTTP_ROUTE = "/default"  # the bare @requests endpoint's route (docarray v2)
HTTP_CASES = [("post 1-doc", 1)]  # (name, docs per request)


def _only_loopback_netns() -> bool:
    # /proc/self/net/dev follows this process's network namespace (/sys may not)
    with open("/proc/self/net/dev") as fh:
        ifaces = [line.split(":")[0].strip() for line in fh.readlines()[2:]]
    return ifaces == ["lo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_names(pids: list[int], gateway_port: int) -> dict[str, int]:
    """Name Jina's processes by role: the one listening on the gateway's port is the gateway."""
    listening = _http_load.listening_ports(pids)
    names: dict[str, int] = {}
    for n, pid in enumerate(pids):
        ports = listening.get(pid, [])
        if gateway_port in ports:
            name = "gateway"
        elif ports:
            name = f"executor (port {ports[0]})"
        else:
            name = f"other {n} ({_load._read_status(pid).get('Name', '?')})"
        names[name] = pid
    return names


def http_cases(
    args: argparse.Namespace, port: int, flow_pids: list[int], tmpdir: str, vers: dict[str, str]
) -> list[dict[str, object]]:
    """The REST door's load: 1 doc per request on POST /default, from ``--http-client``."""
    import urllib.request

    url = f"http://127.0.0.1:{port}{HTTP_ROUTE}"
    names = process_names(flow_pids, port)
    paths = {}
    for name, n_docs in HTTP_CASES:
        body = json.dumps({"data": [{"text": "hello world"}] * n_docs}).encode()
        paths[name] = os.path.join(tmpdir, f"{name.replace(' ', '-')}.json")
        with open(paths[name], "wb") as fh:
            fh.write(body)
        # validate once: 200, the same documents back
        req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        texts = [d.get("text") for d in answer["data"]]
        if texts != ["hello world"] * n_docs:
            raise RuntimeError(f"unexpected answer from {url}: {answer}")
    results = []
    for rnd in range(args.repeat):  # rounds outside, so interference spreads out
        for name, n_docs in HTTP_CASES:
            for conc in args.concurrency:
                row = _http_load.measure_http_case(
                    bench="jina_http",
                    case=name,
                    docs_per_req=n_docs,
                    url=url,
                    body_path=paths[name],
                    concurrency=conc,
                    duration=args.duration,
                    warmup=args.warmup,
                    server_pids=names,
                    python=args.client_python,
                    reject=[],  # errors come back as HTTP 5xx
                    quiet_wait=args.quiet_wait,
                    client=args.http_client,
                    extra={
                        "round": rnd + 1,
                        "jina": vers["jina"],
                        "route": HTTP_ROUTE,
                        "http_client": args.http_client,
                    },
                )
                results.append(row)
                print(json.dumps(row), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description="Jina gateway + 2 no-op executors benchmark")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=CONCURRENCIES)
    p.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each case wait up to S s for other processes to go idle "
        "(for shared machines; makes the run longer)",
    )
    p.add_argument(
        "--allow-network",
        action="store_true",
        help="run even if this network namespace has interfaces other than lo",
    )
    p.add_argument("--json-out", help="also write all result lines to this file")
    p.add_argument(
        "--cases",
        nargs="+",
        choices=[name for name, _, _ in CASES],
        default=[name for name, _, _ in CASES],
        help="gRPC cases to run (memory_bench.py runs only 1-doc)",
    )
    p.add_argument(
        "--protocol",
        choices=["grpc", "http"],
        default="grpc",
        help="the gateway's protocol and the matching load (http: JSON on POST /default)",
    )
    p.add_argument(
        "--client-python",
        help="interpreter of the HTTP load client (needs httpx); default this one",
    )
    p.add_argument(
        "--http-client",
        choices=sorted(_http_load.CLIENTS),
        default="httpx",
        help="the HTTP load client (_http_load.py --client)",
    )
    args = p.parse_args()

    if not _only_loopback_netns() and not args.allow_network:
        sys.exit(
            "refusing to start Jina outside a loopback-only network namespace; "
            "use benchmarks/run_jina_flow.sh (unshare -n)"
        )

    t_imp = time.perf_counter()
    import numpy as np
    from docarray import BaseDoc, DocList
    from docarray.typing import NdArray
    from jina import Executor, Flow, requests
    from jina.proto import jina_pb2
    from jina.types.request.data import DataRequest

    import_s = time.perf_counter() - t_imp

    class BenchDoc(BaseDoc):
        text: str | None = None
        embedding: NdArray | None = None

    class Noop(Executor):
        @requests
        def noop(self, docs: DocList[BenchDoc], **kwargs) -> DocList[BenchDoc]:  # type: ignore[no-untyped-def]
            for _ in docs:
                pass
            return docs

    def build_request(n_docs: int, dim: int) -> bytes:
        rng = np.random.default_rng(0)
        docs = DocList[BenchDoc](
            BenchDoc(text="hello world")
            if dim == 0
            else BenchDoc(embedding=rng.random(dim, dtype=np.float32))
            for _ in range(n_docs)
        )
        req = DataRequest()
        req.header.exec_endpoint = "/"
        req.header.request_id = uuid.uuid4().hex
        req.document_array_cls = DocList[BenchDoc]
        req.data.docs = docs
        return req.proto.SerializeToString()

    vers = _load.versions("jina", "docarray", "grpcio", "protobuf", "numpy")
    port = _free_port()

    # ---- start-up: construct + ready (imports excluded)
    t0 = time.perf_counter()
    f = Flow(protocol=args.protocol, port=port).add(uses=Noop).add(uses=Noop)
    f.start()
    startup_s = time.perf_counter() - t0
    me = os.getpid()
    flow_pids = _load.descendants(me)
    listeners = _load.tcp_listeners()
    bench = "jina_flow" if args.protocol == "grpc" else "jina_http"

    results = []
    tmpdir = tempfile.mkdtemp(prefix="meshflow-bench-jina-")
    try:
        if args.protocol == "http":
            results = http_cases(args, port, flow_pids, tmpdir, vers)
        else:
            import grpc

            paths = {}
            cases = [case for case in CASES if case[0] in args.cases]
            for name, n_docs, dim in cases:
                payload = build_request(n_docs, dim)
                paths[name] = os.path.join(tmpdir, f"{name}.bin")
                with open(paths[name], "wb") as fh:
                    fh.write(payload)
                # validate once: response parses, status OK, same number of docs
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    raw = ch.unary_unary(METHOD)(payload, timeout=30)
                resp = jina_pb2.DataRequestProto()
                resp.ParseFromString(raw)
                if resp.header.status.code != jina_pb2.StatusProto.SUCCESS:
                    raise RuntimeError(f"Jina returned an error: {resp.header.status}")
                back = DataRequest(resp)
                back.document_array_cls = DocList[BenchDoc]
                if len(back.docs) != n_docs:
                    raise RuntimeError(f"expected {n_docs} docs back, got {len(back.docs)}")
            for rnd in range(args.repeat):  # rounds outside, so interference spreads out
                for name, n_docs, _dim in cases:
                    for conc in args.concurrency:
                        row = _load.measure_case(
                            bench=bench,
                            case=name,
                            docs_per_req=n_docs,
                            target=f"127.0.0.1:{port}",
                            method=METHOD,
                            payload_path=paths[name],
                            concurrency=conc,
                            duration=args.duration,
                            warmup=args.warmup,
                            server_pids=flow_pids,
                            quiet_wait=args.quiet_wait,
                            extra={
                                "round": rnd + 1,
                                "jina": vers["jina"],
                                "grpcio": vers["grpcio"],
                            },
                        )
                        results.append(row)
                        print(json.dumps(row), flush=True)
        mem = _load.memory_report(flow_pids)
        pss_sum_mb = mem["pss_sum_mb"]
        main_hwm_mb = round(_load.vm_kb(me) / 1024, 1)
    finally:
        t1 = time.perf_counter()
        f.close()
        close_s = time.perf_counter() - t1
        for fn in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, fn))
        os.rmdir(tmpdir)

    agg = _http_load.aggregate(results) if args.protocol == "http" else _load.aggregate(results)
    summary = {
        "bench": bench,
        "protocol": args.protocol,
        "summary": True,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "versions": vers,
        "mp_start_method": __import__("multiprocessing").get_start_method(),
        "import_s": round(import_s, 3),
        "startup_s": round(startup_s, 3),
        "close_s": round(close_s, 3),
        "flow_processes": len(flow_pids),
        "flow_peak_rss_sum_mb": mem["peak_rss_sum_mb"],
        "flow_pss_sum_mb": pss_sum_mb,
        "orchestrator_peak_rss_mb": main_hwm_mb,
        "per_process": mem["processes"],
        "listeners": listeners,
        "loadavg": os.getloadavg(),
    }
    _load.emit(results, agg, summary, args.json_out)
    print()
    print(
        f"Jina {vers['jina']} (docarray {vers['docarray']}), grpcio {vers['grpcio']}, "
        f"protobuf {vers['protobuf']}, Python {vers['python']}, {os.cpu_count()} CPUs"
    )
    print(
        f"Flow gateway + 2 no-op executors: start-up {startup_s:.2f} s (import "
        f"{import_s:.2f} s, close {close_s:.2f} s), {len(flow_pids)} processes, "
        f"peak RSS sum {mem['peak_rss_sum_mb']} MB (PSS {pss_sum_mb} MB; orchestrator "
        f"{main_hwm_mb} MB)"
    )
    print(f"listening: {', '.join(listeners)}")
    print(
        f"median of {args.repeat} rounds of {args.duration:g} s (after {args.warmup:g} s "
        f"warm-up); srv CPU = CPU of gateway + executors per request"
    )
    if args.protocol == "http":
        print(f"HTTP door: POST {HTTP_ROUTE}, client {args.client_python or sys.executable}")
        _load.print_table(agg, _http_load.TABLE_COLUMNS)
        print("\nserver CPU per request by process, ms (median):")
        for a in agg:
            per = ", ".join(f"{k} {v:.3f}" for k, v in a["cpu_ms_per_req_by_process"].items())
            print(f"  {a['case']} c={a['concurrency']}: {per}")
    else:
        _load.print_table(agg, _load.TABLE_COLUMNS)
    warn = _load.contamination_warning(results)
    if warn:
        print(warn)


if __name__ == "__main__":
    main()
