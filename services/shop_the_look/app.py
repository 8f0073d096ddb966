"""The shop-the-look app: its Flow, its catalog, indexing, and searching over GraphQL.

``python -m services.shop_the_look`` (what ``make demo`` runs) uses these pieces; so do the
tests and ``benchmarks/shop_bench.py``.
"""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx

from meshflow import Client, Document, DocumentArray, Flow, mint_token
from services.shop_the_look import catalog

HERE = os.path.dirname(os.path.abspath(__file__))
FLOW_YML = os.path.join(HERE, "flow.yml")
SECRET_ENV = "SHOP_THE_LOOK_SECRET"
ISSUER = AUDIENCE = "shop-the-look"
READ = ("catalog:read",)
WRITE = ("catalog:read", "catalog:write")

SEARCH = """
query Search(
  $docs: [LookQueryInput!], $limit: Int, $category: String, $colour: String, $filter: JSON
) {
  search(docs: $docs, limit: $limit, category: $category, colour: $colour, filter: $filter) {
    matches { id title category colour pattern imageUrl score imageScore textScore }
  }
}
"""
"""The typed search (``services/shop_the_look/executors.py`` declares its types)."""


def build_flow(
    workspace: str,
    *,
    catalog_dir: str,
    graphql_port: int | None = 8080,
    tracing: bool | float = False,
    mesh: str = "envoy",
    config: str = FLOW_YML,
) -> Flow:
    """The Flow of ``config`` (the app's ``flow.yml``), with its workspace, port, and
    ``catalog_dir`` served at ``/catalog`` (the thumbnails). Makes an HS256 secret for this
    run unless ``SHOP_THE_LOOK_SECRET`` is set."""
    if not os.environ.get(SECRET_ENV):
        os.environ[SECRET_ENV] = secrets.token_urlsafe(48)
    return Flow.load_config(
        config,
        workspace=workspace,
        graphql_port=graphql_port,
        tracing=tracing,
        mesh=mesh,
        static={"/ui": os.path.join(HERE, "web"), "/catalog": catalog_dir},
    )


def token(scopes: Sequence[str] = READ, *, subject: str = "demo", ttl: int = 8 * 3600) -> str:
    """A token for this run's secret (the demo's own identity provider)."""
    secret = os.environ[SECRET_ENV].encode()
    return mint_token(
        key=secret,
        subject=subject,
        issuer=ISSUER,
        audience=AUDIENCE,
        scopes=tuple(scopes),
        ttl=ttl,
    )


def catalog_documents(items: Iterable[catalog.Product], folder: str) -> DocumentArray:
    """The generated catalog's documents: photo (``uri``), description, labels, thumbnail."""
    return DocumentArray(
        Document(
            id=item.id,
            uri=os.path.join(folder, item.filename),
            text=item.description,
            tags={**item.tags, "image_url": f"/catalog/{item.filename}"},
        )
        for item in items
    )


def folder_documents(folder: str) -> DocumentArray:
    """A user's folder of images as documents; the file name (words) is the description."""
    docs = DocumentArray()
    for path in catalog.iter_folder(folder):
        relative = os.path.relpath(path, folder)
        words = re.sub(r"[_\-.]+", " ", os.path.splitext(os.path.basename(path))[0]).strip()
        docs.append(
            Document(
                id=relative,
                uri=os.path.abspath(path),
                text=words,
                tags={"file": relative, "image_url": "/catalog/" + relative.replace(os.sep, "/")},
            )
        )
    return docs


def index(
    flow: Flow,
    docs: DocumentArray,
    *,
    batch: int = 16,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Index ``docs`` through the Flow (gRPC, a writer's token), ``batch`` per request."""
    client = Client(flow.host, flow.port or 0, token=token(WRITE, subject="indexer"))
    indexed = 0
    try:
        for start in range(0, len(docs), batch):
            part = docs[start : start + batch]
            client.post("/index", part, request_size=batch, timeout=300)
            indexed += len(part)
            if progress is not None:
                progress(len(part))
    finally:
        client.close()
    return indexed


def image_bytes(image: Any, fmt: str = "JPEG") -> bytes:
    """An image (PIL) encoded, as a browser would upload it."""
    out = io.BytesIO()
    image.save(out, fmt, quality=90)
    return out.getvalue()


def search(
    url: str,
    bearer: str,
    *,
    text: str | None = None,
    image: bytes | None = None,
    limit: int = 10,
    category: str | None = None,
    colour: str | None = None,
    filter: dict[str, Any] | None = None,
    timeout: float = 60.0,
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """Search over GraphQL (``url``: the gateway's ``/graphql``) by words, a photo or both,
    optionally only a ``category`` or ``colour`` (or any tags in ``filter``); the best
    matches first, each a ``Product`` (``{id, title, category, colour, pattern, imageUrl,
    score, imageScore, textScore}``). Pass a ``client`` to reuse its connection (a new
    ``httpx.Client`` costs milliseconds: it loads CA certificates)."""
    doc: dict[str, Any] = {}
    if text:
        doc["text"] = text
    if image:
        doc["image"] = base64.b64encode(image).decode()
    if not doc:
        raise ValueError("search by text, by image, or both")
    variables = {
        "docs": [doc],
        "limit": limit,
        "category": category,
        "colour": colour,
        "filter": filter or None,
    }
    request = {
        "json": {"query": SEARCH, "variables": variables},
        "headers": {"authorization": f"Bearer {bearer}"},
        "timeout": timeout,
    }
    if client is None:
        with httpx.Client() as own:
            answer = own.post(url, **request)
    else:
        answer = client.post(url, **request)
    body = answer.json()
    if body.get("errors"):
        error = body["errors"][0]
        code = (error.get("extensions") or {}).get("code", "ERROR")
        raise RuntimeError(f"{code}: {error.get('message')}")
    matches: list[dict[str, Any]] = body["data"]["search"][0]["matches"]
    return matches


def table(title: str, matches: Sequence[dict[str, Any]]) -> str:
    """The matches as a text table."""
    lines = [title, f"{'#':>2}  {'fused':>6}  {'image':>6}  {'text':>6}  item", "-" * 72]
    for rank, match in enumerate(matches, 1):
        cells = "  ".join(_cell(match.get(name)) for name in ("score", "imageScore", "textScore"))
        lines.append(f"{rank:>2}  {cells}  {match['id']}: {match.get('title', '')}"[:110])
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:6.3f}" if isinstance(value, int | float) else f"{'':>6}"
