"""Run the quickstart Flow end to end: index a small catalog, search it, print the results.

python -m services.quickstart            # index, search, print, exit
python -m services.quickstart --serve    # ... then keep serving until Ctrl-C
"""

from __future__ import annotations

import argparse
import time

from meshflow import Document, DocumentArray, Flow
from services.quickstart.executors import HashingEncoder, KeywordTagger, ShardIndex

CATALOG = [
    "red cotton summer dress with floral print",
    "blue denim jacket with silver buttons",
    "black leather ankle boots",
    "white canvas sneakers with rubber sole",
    "green wool winter coat",
    "striped linen shirt, navy and white",
    "red silk evening gown",
    "brown leather belt with brass buckle",
    "grey hooded sweatshirt, cotton fleece",
    "yellow rain jacket, waterproof",
    "floral midi skirt in pastel pink",
    "black running shoes with mesh upper",
    "beige trench coat, water resistant",
    "navy blue cotton chinos",
    "white leather sneakers, minimalist",
    "red knitted wool scarf",
]
CATEGORIES = {
    "shoes": ["boots", "sneakers", "shoes"],
    "outerwear": ["jacket", "coat"],
    "dresses": ["dress", "gown", "skirt"],
    "accessories": ["belt", "scarf"],
}
QUERIES = ["red flowery dress", "leather sneakers", "warm coat for winter"]


def build_flow(port: int | None = None) -> Flow:
    """Encoder and tagger in parallel branches, joined by a 2-shard index."""
    return (
        Flow(port=port, name="quickstart")
        .add(uses=HashingEncoder, name="encoder", needs="gateway", replicas=2)
        .add(
            uses=KeywordTagger,
            name="tagger",
            needs="gateway",
            uses_with={"categories": CATEGORIES},
        )
        .add(
            uses=ShardIndex,
            name="index",
            needs=["encoder", "tagger"],
            shards=2,
            polling={"/index": "ANY", "*": "ALL"},
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="keep serving after the demo")
    parser.add_argument("--port", type=int, default=None, help="gateway port (default: any)")
    args = parser.parse_args()

    flow = build_flow(args.port)
    started = time.perf_counter()
    with flow:
        print(f"Flow ready in {time.perf_counter() - started:.2f} s, gateway on port {flow.port}")
        catalog = DocumentArray(Document(text=t) for t in CATALOG)
        flow.post("/index", catalog, request_size=4)
        [counts] = flow.post("/count", return_responses=True)
        print(f"indexed {len(catalog)} items: {counts.results['index']}")
        results = flow.post("/search", DocumentArray(Document(text=q) for q in QUERIES))
        for query in results:
            print(f"\nquery: {query.text!r} (categories {query.tags['categories']})")
            print(f"  {'score':>6}  {'shard':>5}  item")
            for match in query.matches:
                print(
                    f"  {match.scores['cosine']:6.3f}  {int(match.tags['shard']):5d}  {match.text}"
                )
        if args.serve:
            print(f"\nserving gRPC on 127.0.0.1:{flow.port}; Ctrl-C to stop")
            flow.block()


if __name__ == "__main__":
    main()
