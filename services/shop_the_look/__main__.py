"""python -m services.shop_the_look: index the catalog, start the Flow, search, serve.

    python -m services.shop_the_look                  # the generated catalog (256 products)
    python -m services.shop_the_look --catalog DIR    # your own folder of images
    python -m services.shop_the_look --no-serve       # index, search, stop

Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tqdm import tqdm

from meshflow import DocumentArray, Flow
from meshflow.errors import MeshflowError
from services.shop_the_look import app, catalog


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m services.shop_the_look",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the usage lines as written
    )
    p.add_argument("--catalog", metavar="DIR", help="index this folder of images instead")
    p.add_argument("--workspace", default=os.path.join("workspace", "shop-the-look"))
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0: any free one)")
    p.add_argument("--items", type=int, help="index only the first N catalog items")
    p.add_argument("--mesh", choices=("envoy", "direct"), default="envoy")
    p.add_argument("--tracing", action="store_true", help="export traces over OTLP")
    p.add_argument("--no-serve", action="store_true", help="stop after the two searches")
    args = p.parse_args(argv)
    if args.catalog and not os.path.isdir(args.catalog):
        p.error(f"--catalog {args.catalog!r} is not a folder")
    if not 0 <= args.port <= 65535:
        p.error("--port must be from 0 to 65535")
    if args.items is not None and args.items < 1:
        p.error("--items must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workspace = os.path.abspath(args.workspace)
    if args.catalog:
        folder = os.path.abspath(args.catalog)
        docs = app.folder_documents(folder)
        if not docs:
            print(f"no images in {folder}", file=sys.stderr)
            return 2
    else:
        folder = os.path.join(workspace, "catalog")
        items = catalog.products()
        with tqdm(total=len(items), desc="render catalog", unit="img") as bar:
            catalog.write(items, folder, bar.update)
        docs = app.catalog_documents(items, folder)
    if args.items:
        docs = docs[: args.items]
    flow = app.build_flow(
        os.path.join(workspace, "flow"),
        catalog_dir=folder,
        graphql_port=args.port or None,
        tracing=args.tracing,
        mesh=args.mesh,
    )
    print(f"starting the Flow ({len(flow.deployments)} executors, mesh: {args.mesh}) ...")
    try:
        flow.start()
    except MeshflowError as exc:
        print(f"cannot start the Flow: {exc}", file=sys.stderr)
        return 1
    try:
        return run(flow, docs, args)
    except KeyboardInterrupt:
        return 130
    finally:
        print("stopping ...")
        flow.close()


def run(flow: Flow, docs: DocumentArray, args: argparse.Namespace) -> int:
    with tqdm(total=len(docs), desc="index", unit="doc") as bar:
        app.index(flow, docs, progress=bar.update)
    reader = app.token(app.READ)
    url = flow.graphql_url
    if args.catalog:
        first = docs[0]
        with open(first.uri, "rb") as fh:
            photo = fh.read()
        words = first.text or "photo"
        photo_title = f"image query: {os.path.basename(first.uri)}"
    else:
        query = catalog.queries(1)[0]  # a new rendering, not in the index
        photo = app.image_bytes(catalog.render(query))
        words = "red striped t-shirt"
        photo_title = f"image query: a new photo of a {query.description}"
    print()
    print(app.table(photo_title, app.search(url, reader, image=photo, limit=5)))
    print()
    print(app.table(f"text query: {words!r}", app.search(url, reader, text=words, limit=5)))
    print()
    base = url.removesuffix("/graphql")
    print(f"GraphQL:    {url}   (token: {reader})")
    print(f"Search page: {base}/ui/#token={reader}")
    print(f"Metrics:    {base}/metrics")
    if args.no_serve:
        return 0
    print("serving; Ctrl-C stops")
    flow.block()
    return 0


if __name__ == "__main__":
    sys.exit(main())
