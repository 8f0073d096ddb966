"""The snippets of docs/ and services/*/README.md, run as they are written from a user's own
project folder (no PYTHONPATH), against real Flows. Each test gives a snippet only the context
its page states ("given a Flow f", "your package my_pkg"); the package the pages name is the
user's, and this test writes a small one. Snippets that need a container engine or kubectl
are checked statically: the commands and flags exist, the files they name are written by the
export. ``CHECKED`` says how each fenced block of every page is covered; a block that is in no
test fails ``test_every_block_is_run_or_checked``."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from procs import meshflow_flow, stop_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PAGES = sorted(
    [str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")]
    + [str(p.relative_to(ROOT)) for p in (ROOT / "services").glob("*/README.md")]
)
RUNNABLE = {"python", "bash", "sh", "yaml", "graphql", "console", "shell", ""}

# (page, index of the fenced block on the page) -> how it is covered.
CHECKED: dict[tuple[str, int], str] = {
    ("docs/architecture.md", 0): "text: the package tree",
    ("docs/architecture.md", 1): "text: the layers and what each imports (import_cycles.py checks)",
    ("docs/auth.md", 0): "run: test_auth_page",
    ("docs/auth.md", 1): "run: test_auth_page (the JWKS Flow)",
    ("docs/auth.md", 2): "output: test_auth_page (the gateway's log)",
    ("docs/auth.md", 3): "run: test_auth_page (the Catalog executor)",
    ("docs/auth.md", 4): "run: test_auth_page",
    ("docs/auth.md", 5): "run: test_auth_page",
    ("docs/auth.md", 6): "run: test_auth_page",
    ("docs/auth.md", 7): "run: test_auth_page",
    ("docs/batching.md", 0): "run: test_batching_page (the executor, in a Flow)",
    ("docs/batching.md", 1): "run: test_batching_page (f serves concurrent requests)",
    ("docs/batching.md", 2): "run: test_batching_page (loaded as a Flow YAML)",
    ("docs/batching.md", 3): "run: test_batching_page (built; no GPU here)",
    ("docs/batching.md", 4): "run: test_batching_page (loaded as a Flow YAML)",
    ("docs/flow.md", 0): "run: test_flow_page_shards_and_reduce",
    ("docs/flow.md", 1): "run: test_flow_page_shards_and_reduce",
    ("docs/flow.md", 2): "run: test_flow_page_yaml_serves",
    ("docs/flow.md", 3): "run: test_flow_page_admission_policy",
    ("docs/hub.md", 0): "run: test_hub_page (new, push, list, show, pull, lock)",
    ("docs/hub.md", 1): "run: test_hub_page (both versions answer; 0.2.0 pushed first)",
    ("docs/hub.md", 2): "static: test_hub_page (the scaffold has these files)",
    ("docs/hub.md", 3): "static: test_hub_page (the pushed metadata has these keys)",
    ("docs/hub.md", 4): "run: test_hub_page (meshflow reads the constraints file it names)",
    ("docs/hub.md", 5): "run: test_hub_page (the flow query on the running Flow)",
    ("docs/graphql.md", 0): "static: test_graphql_page (the schema's types, fields and arguments)",
    ("docs/graphql.md", 1): "run: test_graphql_page",
    ("docs/graphql.md", 2): "run: test_graphql_page",
    ("docs/graphql.md", 3): "run: test_graphql_page",
    ("docs/graphql.md", 4): "run: test_graphql_page (over the WebSocket)",
    ("docs/graphql.md", 5): "run: test_graphql_page (the typed executor)",
    ("docs/graphql.md", 6): "run: test_graphql_page",
    ("docs/graphql.md", 7): "run: test_graphql_page_typed_documents (the typed executor)",
    ("docs/graphql.md", 8): "static: test_graphql_page_typed_documents (its types and fields)",
    ("docs/graphql.md", 9): "run: test_graphql_page",
    ("docs/graphql.md", 10): "run: test_graphql_page_persisted_queries (the options build)",
    ("docs/graphql.md", 11): "static: test_graphql_page_persisted_queries (the manifest's keys)",
    ("docs/mesh.md", 0): "text: the topology drawing",
    ("docs/mesh.md", 1): "text: the drawing of one Envoy for the Flow",
    ("docs/mesh.md", 2): "run: test_mesh_page_traffic_options (and its defaults)",
    ("docs/mesh.md", 3): "run: test_mesh_page_yaml_and_status",
    ("docs/mesh.md", 4): "run: test_mesh_page_traffic_options",
    ("docs/mesh.md", 5): "output: test_mesh_page_yaml_and_status",
    ("docs/deploy.md", 0): "run + static: test_deploy_page_compose (the export runs; docker)",
    ("docs/deploy.md", 1): "run + static: test_deploy_page_kubernetes (the export runs; kubectl)",
    ("docs/wire.md", 0): "text: the fields of DocumentColumns (proto/meshflow/v1/document.proto)",
    ("docs/observability.md", 0): "run: test_observability_page",
    ("docs/observability.md", 1): "run: test_observability_page",
    ("docs/observability.md", 2): "static: test_observability_stack_files (needs docker)",
    ("docs/observability.md", 3): "output: test_observability_page (the access lines)",
    ("services/image_encoder/README.md", 0): "static: test_services_encoders (pip installs)",
    ("services/image_encoder/README.md", 1): "run: test_services_encoders",
    ("services/ranker/README.md", 0): "run: test_services_indexer_and_ranker",
    ("services/shop_the_look/README.md", 0): "static: test_shop_the_look_commands (the demo)",
    ("services/shop_the_look/README.md", 1): "text: the graph",
    ("services/shop_the_look/README.md", 2): "run: test_services_indexer_and_ranker (validated"
    " against the served schema; it is app.SEARCH, which test_shop_the_look.py runs)",
    ("services/text_encoder/README.md", 0): "static: test_services_encoders (pip installs)",
    ("services/text_encoder/README.md", 1): "run: test_services_encoders",
    ("services/vector_indexer/README.md", 0): "static: test_services_encoders (pip installs)",
    ("services/vector_indexer/README.md", 1): "run: test_services_indexer_and_ranker",
}

MY_PKG = {
    "__init__.py": "",
    "encoders.py": """
import hashlib

import numpy as np

from meshflow import DocumentArray, Executor, requests


def vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return np.random.default_rng(seed).random(16).astype(np.float32)


class Encoder(Executor):
    def __init__(self, model: str = "base", **kwargs):
        super().__init__(**kwargs)
        self.model = model

    @requests
    def encode(self, docs: DocumentArray, **kwargs):
        for doc in docs:
            doc.embedding = vector(doc.text)


TextEncoder = Encoder
""",
    "indexer.py": """
from meshflow import DocumentArray, Executor, requests


class Indexer(Executor):
    @requests(on="/index", reduce={"indexed": "sum"})
    def index(self, docs: DocumentArray, **kwargs):
        return {"indexed": len(docs)}

    @requests(on="/search")
    def search(self, docs: DocumentArray, **kwargs):
        for doc in docs:
            doc.text += " (searched)"
""",
}


def fenced(page: str) -> list[tuple[str, str]]:
    """Every fenced block of a page, in order, as (language, text)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    found = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", text, flags=re.M | re.S)
    return [(lang, textwrap.dedent(code)) for _, lang, code in found]


def block(page: str, index: int, language: str) -> str:
    lang, code = fenced(page)[index]
    assert lang == language, f"{page} block {index} is {lang!r}, not {language!r}: {code[:80]}"
    assert (page, index) in CHECKED
    return code


@functools.cache
def base_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH. When the meshflow that the bare
    interpreter imports is not this checkout's (a git worktree of a checkout installed in
    editable mode), this checkout is put first on the path: the user's own folder still
    reaches Python only as the working directory."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = path
    found = subprocess.run(
        [sys.executable, "-c", "import meshflow; print(meshflow.__file__)"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if Path(found).resolve() != (ROOT / "meshflow" / "__init__.py").resolve():
        env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "my-project"
    (root / "my_pkg").mkdir(parents=True)
    for name, source in MY_PKG.items():
        (root / "my_pkg" / name).write_text(source)
    return root


def python(
    project: Path, source: str, timeout: float = 90, **env: str
) -> subprocess.CompletedProcess[str]:
    script = project / "snippet.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=project,
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def shell(project: Path, script: str, timeout: float = 60, **env: str) -> str:
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=project,
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(autouse=True, scope="module")
def fixed_ports_left_free() -> Iterator[None]:
    """The pages use ports 50051 and 8080 as written: nothing may still listen there after."""
    yield
    deadline = time.monotonic() + 10
    while any(listening(p) for p in (50051, 8080)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(listening(p) for p in (50051, 8080))


def indent(code: str, by: str = "    ") -> str:
    return "".join(f"{by}{line}\n" if line.strip() else "\n" for line in code.splitlines())


def test_every_block_is_run_or_checked() -> None:
    missing = [
        (page, i, lang, code.splitlines()[0] if code else "")
        for page in PAGES
        for i, (lang, code) in enumerate(fenced(page))
        if lang in RUNNABLE and (page, i) not in CHECKED
    ]
    assert not missing, missing
    stale = [key for key in CHECKED if key[1] >= len(fenced(key[0]))]
    assert not stale, stale


# --- docs/batching.md --------------------------------------------------------------------

BATCHING_CHECK = """
import asyncio

from meshflow import AsyncClient, Document

assert f.deployment("executor0").uses_dynamic_batching["/encode"].timeout == 5
assert g.deployment("executor0").uses_dynamic_batching["/encode"].preferred_batch_size == 16


async def send(port):
    async with AsyncClient(port=port, timeout=60) as client:
        return await asyncio.gather(
            *(client.post("/encode", [Document(text="x" * i)] * i) for i in range(1, 9))
        )


with f:
    answers = asyncio.run(send(f.port))
for i, docs in enumerate(answers, 1):
    assert len(docs) == i and all(d.embedding[0] == i for d in docs), (i, docs)
print("served", len(answers))
"""

BATCHING_YAML_CHECK = """
from meshflow import Flow

batched = Flow.load_config("batched.yml").deployment("encoder")
assert batched.uses_dynamic_batching["/encode"].preferred_batch_size == 16
assert batched.uses_dynamic_batching["/encode"].timeout == 5
assert Flow.load_config("gpus.yml").deployment("encoder").gpus == 1
assert (a.deployments[0].gpus, b.deployments[0].devices) == (1, ("0", "1", "2", "3"))
assert c.deployments[0].env == {"CUDA_VISIBLE_DEVICES": "RR"}
print("checked")
"""


def test_batching_page(project: Path) -> None:
    page = "docs/batching.md"
    encoder = block(page, 0, "python")
    (project / "my_pkg" / "encoder.py").write_text(encoder)
    for index, name in ((2, "batched"), (4, "gpus")):
        data = {"jtype": "Flow", **yaml.safe_load(block(page, index, "yaml"))}
        (project / f"{name}.yml").write_text(yaml.safe_dump(data))
    done = python(project, encoder + block(page, 1, "python") + BATCHING_CHECK, timeout=120)
    assert "served 8" in done.stdout
    devices = block(page, 3, "python")
    done = python(project, encoder + devices + BATCHING_YAML_CHECK)
    assert "checked" in done.stdout


# --- docs/hub.md -------------------------------------------------------------------------

HUB = "docs/hub.md"
HUB_FLOW = """
jtype: Flow
executors:
  - name: encoder
    uses: hub://image-encoder>=0.1
"""
HUB_CHECK = """
import json

import httpx

from meshflow import Document

with f:
    assert f.post("/", inputs=[Document()], target_executor="old")[0].tags["ImageEncoder"]
    versions = {d["name"]: d["hub"]["version"] for d in f.describe()["deployments"]}
    answer = httpx.post(f.graphql_url, json={"query": QUERY}, timeout=30).json()
assert versions == {"old": "0.1.0", "new": "0.2.0"}, versions
shown = {d["name"]: d["hub"]["version"] for d in answer["data"]["flow"]["deployments"]}
assert shown == versions, answer
print("versions", json.dumps(versions, sort_keys=True))
"""


def test_hub_page(project: Path) -> None:
    hub = project.parent / "hub"
    env = {
        "MESHFLOW_HUB": str(hub),
        "MESHFLOW_HUB_CACHE": str(project.parent / "hub-cache"),
        "UV_CACHE_DIR": str(project.parent / "uv-cache"),
        "UV_DEFAULT_INDEX": f"file://{hub}/simple",  # nothing from elsewhere
    }
    (project / "flow.yml").write_text(HUB_FLOW)
    out = shell(project, block(HUB, 0, "bash"), timeout=300, **env)
    assert "pushed image-encoder 0.1.0" in out
    assert re.search(r"^image-encoder\s+0\.1\.0\s", out, re.M), out
    assert "endpoint:     /default()" in out  # show imports the class in its environment
    assert (project / "flow.hub.lock").exists()

    scaffold = project / "image-encoder"
    for line in block(HUB, 2, "").splitlines()[1:]:
        assert (scaffold / line.split()[0]).exists(), line
    documented = json.loads(block(HUB, 3, "json"))
    written = json.loads((scaffold / "image_encoder" / "meshflow-executor.json").read_text())
    assert set(written) == set(documented), written

    read = "python -c 'from meshflow.hub import sources; print(sources.meshflow_constraints())'"
    pinned = shell(project, block(HUB, 4, "bash") + "\n" + read, **env)
    assert f"('{project / 'constraints.txt'}',)" in pinned, pinned
    assert (project / "constraints.txt").read_text() == "torch==2.13.0+cpu\n"
    (project / "constraints.txt").unlink()  # the page's Flow below runs without it

    pyproject = scaffold / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    shell(project, "meshflow hub push image-encoder", timeout=120, **env)
    query = block(HUB, 5, "graphql")
    source = block(HUB, 1, "python") + f"QUERY = {query!r}\n" + HUB_CHECK
    done = python(project, source, timeout=180, **env)
    assert 'versions {"new": "0.2.0", "old": "0.1.0"}' in done.stdout


# --- docs/auth.md ------------------------------------------------------------------------

AUTH = "docs/auth.md"

AUTH_FLOW = """
with:
  port: 50051
  graphql_port: 8080
  auth:
    secret_file: jwt.secret
    issuer: https://id.example
    audience: shop
    scopes: {/index: index:write, /search: search:read}
executors:
  - name: catalog
    uses: my_pkg.catalog:Catalog
"""


def test_auth_page(project: Path) -> None:
    """Every snippet of the page in turn: the Flow of its first snippet starts (its key is
    loaded); the JWKS YAML serves and takes a token of the page's RSA key; the dev tokens,
    the curl and the clients work against a Flow on 50051/8080 reading `jwt.secret`; the
    refusals log the lines the page shows."""
    (project / "my_pkg" / "catalog.py").write_text(block(AUTH, 3, "python"))
    (project / "flow.yml").write_text(AUTH_FLOW)
    tokens = block(AUTH, 4, "bash")
    minted = shell(project, tokens).split()
    assert len(minted) == 3 and all(t.count(".") == 2 for t in minted), minted
    # the JWKS Flow of the page's YAML, trusting private.pem's public key as 'k2'
    (project / "jwks").mkdir()
    (project / "jwks" / "flow.yml").write_text(
        block(AUTH, 1, "yaml") + "executors:\n  - uses: my_pkg.catalog:Catalog\n"
    )
    curl = block(AUTH, 6, "bash")
    code = f"""
import json, os, subprocess, sys, urllib.request
from pathlib import Path
import jwt
from meshflow import Document, DocumentArray, Flow, ForbiddenError, UnauthenticatedError

{block(AUTH, 0, "python")}
f.add(uses='my_pkg.catalog:Catalog')
with f:
    assert f.describe()['gateway']['serving']

pem = Path('private.pem').read_bytes()
from cryptography.hazmat.primitives.serialization import load_pem_private_key
public = json.loads(
    jwt.algorithms.RSAAlgorithm.to_jwk(load_pem_private_key(pem, None).public_key())
)
Path('jwks/keys').mkdir()
Path('jwks/keys/jwks.json').write_text(json.dumps({{'keys': [{{**public, 'kid': 'k2'}}]}}))
g = Flow.load_config('jwks/flow.yml')
with g:
    g.token = os.environ['SVC_TOKEN']   # the page's `--key-file private.pem --kid k2`
    g.post('/index', DocumentArray([Document(text='x')]))   # index:write is k2's token's scope
    g.token = None
    try:
        g.post('/index', DocumentArray([Document(text='x')]))
        raise SystemExit('no token, yet served')
    except UnauthenticatedError:
        pass

f = Flow.load_config('flow.yml', log_dir='logs')
with f:
    env = dict(os.environ)
    env['TOKEN'] = subprocess.run(
        ['meshflow', 'token', '--flow', 'flow.yml', '--sub', 'alice', '--scope', 'search:read'],
        capture_output=True, text=True, check=True).stdout.strip()
    out = subprocess.run(['bash', '-e', '-c', {curl!r}], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert json.loads(out)['docs'][0]['text'] == 'red dress', out

{indent(block(AUTH, 5, "python"))}
{indent(block(AUTH, 7, "python"))}
    queries = DocumentArray([Document(text='red dress')])
    assert client.post('/search', queries).texts == ['red dress']
    assert web.post('/search', queries).texts == ['red dress']
    assert f.post('/search', queries).texts == ['red dress']
    try:
        client.post('/index', queries)
        raise SystemExit('alice indexed')
    except ForbiddenError as exc:
        assert exc.scope == 'index:write', exc.scope
    bob = mint_token(key=secret_bytes, subject='bob', issuer='https://id.example',
                     audience='another', scopes=('search:read',))
    request = urllib.request.Request(f.graphql_url, data=b'{{"query": "{{ __typename }}"}}',
                                     headers={{'authorization': 'Bearer ' + bob,
                                               'content-type': 'application/json'}})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise SystemExit('a wrong audience served')
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
        shown = 'Bearer realm="meshflow", error="invalid_token", error_description="'
        assert exc.headers['www-authenticate'].startswith(shown), exc.headers
log = '\\n'.join(p.read_text() for p in Path('logs').rglob('*gateway*'))
print(log)
"""
    log = python(project, code, MESHFLOW_JWT_SECRET="s" * 32, SVC_TOKEN=minted[2]).stdout
    for line in block(AUTH, 2, "").splitlines():
        assert line in log, (line, log)


# --- docs/flow.md ------------------------------------------------------------------------

FLOW = "docs/flow.md"


def test_flow_page_shards_and_reduce(project: Path) -> None:
    """The sharded, replicated VectorIndexer and the Store with its `reduce` rules, in one
    Flow f: an id is stored once, by the shard that owns it, and both find it; the shards'
    counts add up."""
    code = f"""
import numpy as np
from meshflow import Document, DocumentArray, Flow
f = Flow()
{block(FLOW, 0, "python")}
{block(FLOW, 1, "python")}
rng = np.random.default_rng(0)
vectors = rng.random((10, 512), dtype=np.float32)
docs = DocumentArray(Document(id=f'd{{i}}', embedding=v) for i, v in enumerate(vectors))
with f:
    [indexed] = f.post('/index', docs, return_responses=True)
    assert indexed.results['store'] == {{'indexed': 10}}, indexed.results
    assert indexed.results['executor0'] == {{'indexed': 10}}, indexed.results
    [counted] = f.post('/count', return_responses=True)
    assert counted.results['store'] == {{'count': 10}}, counted.results
    assert counted.results['executor0'] == {{'count': 10}}, counted.results
    [found] = f.post('/search', DocumentArray([Document(embedding=docs[3].embedding)]))
    assert found.matches[0].id == 'd3', found.matches
"""
    python(project, code)


def test_flow_page_yaml_serves(project: Path, free_port: int) -> None:
    """The page's Flow YAML served by `meshflow flow` from the project folder, its port from
    ${{ ENV.PORT }}; the error format the page shows, for a mistyped key."""
    (project / "flow.yml").write_text(block(FLOW, 2, "yaml"))
    env = {**base_env(), "PORT": str(free_port)}
    with meshflow_flow("flow.yml", "--quiet", cwd=project, env=env) as (proc, lines):
        assert f"127.0.0.1:{free_port}" in "".join(lines), "".join(lines)
        code = f"""
from meshflow import Client, Document, DocumentArray
client = Client(port={free_port})
[r] = client.post('/index', DocumentArray(Document(text=str(i)) for i in range(6)),
                  return_responses=True)
assert r.results['index'] == {{'indexed': 6}}, r.results
assert client.post('/search', DocumentArray([Document(text='a')])).texts == ['a (searched)']
"""
        python(project, code)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    shown = re.search(r"`(flow\.yml:7: executors\[1\]\.replica: [^`]*)`", (ROOT / FLOW).read_text())
    assert shown is not None
    typo = project / "typo"
    typo.mkdir()
    (typo / "my_pkg").symlink_to(project / "my_pkg")
    (typo / "flow.yml").write_text(
        "name: shop\nexecutors:\n  - name: encoder\n    uses: my_pkg.encoders:TextEncoder\n"
        "  - name: index\n    uses: my_pkg.indexer:Indexer\n    replica: 2\n"
    )
    done = subprocess.run(
        [str(BIN / "meshflow"), "flow", "flow.yml"],
        cwd=typo,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert " ".join(shown.group(1).removesuffix("...").split()) in done.stderr, done.stderr


def test_flow_page_admission_policy(project: Path) -> None:
    """The page's AdmissionPolicy: the Flow serves with it, and it survives save and load."""
    code = f"""
{block(FLOW, 3, "python")}
from meshflow import DocumentArray
f.add(uses='my_pkg.indexer:Indexer')
assert f.max_in_flight == 256 and f.admission == AdmissionPolicy(), f.admission
f.save_config('saved.yml')
assert Flow.load_config('saved.yml').admission == f.admission
with f:
    assert f.post('/search', DocumentArray.empty(1)).texts == [' (searched)']
"""
    python(project, code)


# --- docs/graphql.md ---------------------------------------------------------------------

GRAPHQL = "docs/graphql.md"

STORE = """
from meshflow import Document, DocumentArray, Executor, requests


class Store(Executor):
    state_scope = "process"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.items = DocumentArray()

    @requests(on="/index")
    def index(self, docs, **kwargs):
        self.items.extend(Document(id=d.id, text=d.text) for d in docs)

    @requests(on="/search", read_only=True)
    def search(self, docs, parameters, **kwargs):
        for doc in docs:
            words = set(doc.text.split())
            for item in self.items:
                if words & set(item.text.split()):
                    doc.matches.append(Document(id=item.id, text=item.text, scores={"words": 1.0}))
            doc.matches = doc.matches[: int(parameters.get("limit", 10))]
"""

GRAPHQL_CLIENT = """
import json, subprocess, sys, urllib.request
from websockets.sync.client import connect
from meshflow import Flow

INTROSPECT = (
    "{ __schema { types { name fields { name args { name } } inputFields { name } } } }"
)
QUERIES, SUBSCRIPTION, CURL = json.loads(sys.argv[1])


def ask(url, query):
    body = json.dumps({'query': query}).encode()
    request = urllib.request.Request(url, data=body, headers={'content-type': 'application/json'})
    with urllib.request.urlopen(request, timeout=30) as answer:
        out = json.loads(answer.read())
    assert 'errors' not in out, out
    return out['data']


f = (Flow(graphql_port=8080)
     .add(uses='my_pkg.store:Store', name='store')
     .add(uses='my_pkg.shop:Indexer', name='indexer'))
with f:
    url = f.graphql_url
    assert url == 'http://127.0.0.1:8080/graphql', url
    print(json.dumps([ask(url, q) for q in QUERIES]))
    with connect(url.replace('http', 'ws', 1), subprotocols=['graphql-transport-ws']) as ws:
        ws.send(json.dumps({'type': 'connection_init', 'payload': {}}))
        assert json.loads(ws.recv(timeout=30))['type'] == 'connection_ack'
        ws.send(json.dumps({'id': '1', 'type': 'subscribe', 'payload': {'query': SUBSCRIPTION}}))
        pushed = []
        while (message := json.loads(ws.recv(timeout=30)))['type'] == 'next':
            pushed.append(message['payload'])
        assert message['type'] == 'complete', message
    print(json.dumps(pushed))
    print(subprocess.run(['bash', '-e', '-c', CURL], capture_output=True, text=True,
                         timeout=30, check=True).stdout.strip())
    print(json.dumps(ask(url, INTROSPECT)))
    root = url.removesuffix('/graphql')
    health = json.loads(urllib.request.urlopen(root + '/health', timeout=30).read())
    assert health == {'status': 'SERVING'}, health
    for body, kind, status, code in (
        (b'[1]', 'application/json', 400, 'BAD_REQUEST'),
        (b'{"on": "/search", "doc": []}', 'application/json', 400, 'BAD_USER_INPUT'),
        (b'{"docs": []}', 'application/json', 400, 'BAD_USER_INPUT'),
        (b'{"on": "/search"}', 'text/plain', 415, 'UNSUPPORTED_MEDIA_TYPE'),
    ):
        request = urllib.request.Request(root + '/post', data=body, headers={'content-type': kind})
        try:
            urllib.request.urlopen(request, timeout=30)
            raise SystemExit(f'{body!r} served')
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read())
            assert exc.code == status, (body, exc.code, answer)
            assert answer['errors'][0]['extensions']['code'] == code, (body, answer)
    page = urllib.request.urlopen(root + '/', timeout=30)
    assert page.headers['content-type'].startswith('text/html')
    assert 'http://' not in page.read().decode().replace(root, '')  # no CDN
"""


def sdl_fields(sdl: str) -> dict[str, dict[str, set[str]]]:
    """The schema block's types: type name -> field name -> argument names."""
    types: dict[str, dict[str, set[str]]] = {}
    sdl = re.sub(r"#[^\n]*", "", sdl).replace("(base64)", "")
    for name, body in re.findall(r"(?:type|input) (\w+) \{(.*?)\}", sdl, flags=re.S):
        fields: dict[str, set[str]] = {}
        for field, args in re.findall(r"(\w+)(?:\(([^)]*)\))?\s*:", body):
            fields[field] = set(re.findall(r"(\w+)\s*:", args))
        types[name] = fields
    return types


def test_graphql_page_persisted_queries(project: Path) -> None:
    """The page's persisted query options build Flows (a manifest of the page's format next
    to them), and its manifest has the keys of Apollo's format."""
    from meshflow.spec.persisted import MANIFEST_FORMAT, sha256_hex

    manifest = json.loads(block(GRAPHQL, 11, "json"))
    assert manifest["format"] == MANIFEST_FORMAT and manifest["version"] == 1
    assert set(manifest["operations"][0]) == {"id", "name", "type", "body"}
    body = "query Coats { flow { healthy } }"
    manifest["operations"][0].update(id=sha256_hex(body), body=body)
    (project / "persisted-queries.json").write_text(json.dumps(manifest))
    snippet = block(GRAPHQL, 10, "python") + "\nprint('built')\n"
    done = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=project,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "built\n", done.stderr


def test_graphql_page_typed_documents(project: Path) -> None:
    """The page's typed executor makes the types, fields and arguments the page shows (the
    offline SDL, which tests/integration/test_graphql_typed.py compares with the served
    schema)."""
    (project / "my_pkg" / "typed.py").write_text(block(GRAPHQL, 7, "python"))
    code = """
from meshflow import Flow
from meshflow.gateway.sdl import schema_sdl
print(schema_sdl(Flow().add(uses='my_pkg.typed:Shop', name='shop').spec))
"""
    sdl = python(project, code).stdout
    real = sdl_fields(sdl)
    for name, fields in sdl_fields(block(GRAPHQL, 8, "graphql")).items():
        assert name in real, name
        for field, args in fields.items():
            assert field in real[name], (name, field, sorted(real[name]))
            assert args == real[name][field], (name, field, args, real[name][field])
    shown = re.sub(r"\s+", " ", block(GRAPHQL, 8, "graphql"))
    assert "type Product { id: ID! title: String! category: String! price: Float" in shown
    assert re.search(r"type Product \{\s*id: ID!\s*title: String!\s*category: String!", sdl)


def test_graphql_page(project: Path) -> None:
    """A Flow on 8080 with a store and the page's typed Indexer: its mutations, topology
    query, subscription, typed query field and curl answer; the schema has the types, fields
    and arguments the page shows."""
    (project / "my_pkg" / "store.py").write_text(STORE)
    (project / "my_pkg" / "shop.py").write_text(block(GRAPHQL, 5, "python"))
    (project / "snippet.py").write_text(GRAPHQL_CLIENT)
    given = [
        [block(GRAPHQL, i, "graphql") for i in (1, 2, 3, 6)],
        block(GRAPHQL, 4, "graphql"),
        block(GRAPHQL, 9, "bash"),
    ]
    done = subprocess.run(
        [sys.executable, "snippet.py", json.dumps(given)],
        cwd=project,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    indexed, searched, topology, typed = json.loads(lines[0])
    assert indexed["post"]["requestId"]
    [doc] = searched["post"]["docs"]
    assert [m["id"] for m in doc["matches"]] == ["red-dress"], doc
    assert topology["flow"]["healthy"] is True
    assert [d["name"] for d in topology["flow"]["deployments"]] == ["store", "indexer"]
    assert [m["id"] for m in typed["search"]["docs"][0]["matches"]] == ["red-dress"]
    pushed = json.loads(lines[1])
    assert len(pushed) == 2 and all(len(p["data"]["stream"]["docs"]) == 1 for p in pushed)
    posted = json.loads(lines[2])
    [doc] = posted["docs"]
    assert [m["id"] for m in doc["matches"]] == ["red-dress"], posted
    real = {
        t["name"]: {
            f["name"]: {a["name"] for a in f.get("args") or []}
            for f in (t["fields"] or t["inputFields"] or [])
        }
        for t in json.loads(lines[3])["__schema"]["types"]
    }
    for name, fields in sdl_fields(block(GRAPHQL, 0, "graphql")).items():
        assert name in real, name
        if name != "Query":  # the page shows Query's endpoint fields by one example
            assert set(fields) == set(real[name]), (name, sorted(fields), sorted(real[name]))
        for field, args in fields.items():
            assert field in real[name], (name, field, sorted(real[name]))
            assert args == real[name][field], (name, field, args, real[name][field])


# --- docs/mesh.md ------------------------------------------------------------------------

MESH = "docs/mesh.md"


def test_mesh_page_traffic_options(project: Path) -> None:
    """The traffic options serve (three replicas, each behind its sidecar), their policy
    values are the defaults as the page says, describe() shows every replica and its sidecar,
    and Envoy's stats answer on the admin socket with curl."""
    import meshflow

    snippet = block(MESH, 2, "python")
    names = ("RetryPolicy", "HealthCheck", "OutlierDetection", "CircuitBreaker")
    calls = [
        (node.func.id, node)
        for node in ast.walk(ast.parse(snippet))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
    ]
    assert len(calls) == 4
    for name, call in calls:
        shown = eval(compile(ast.Expression(call), MESH, "eval"), vars(meshflow))
        assert shown == getattr(meshflow, name)(), shown
    code = f"""
import json, subprocess
from meshflow import Document, DocumentArray
{snippet}
with f:
    assert f.post('/', DocumentArray([Document(text='a')]))[0].embedding.shape == (16,)
{indent(block(MESH, 4, "python"))}
    described = f.describe()
    admin = described['gateway']['sidecar']['admin']
    stats = subprocess.run(['curl', '-s', '--unix-socket', admin, 'http://x/stats'],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert 'cluster.' in stats, stats[:500]
    print(json.dumps(described, default=str))
"""
    described = json.loads(python(project, code).stdout.splitlines()[-1])
    [deployment] = described["deployments"]
    assert len(deployment["replicas"]) == 3
    assert all(r["sidecar"]["pid"] and r["healthy"] for r in deployment["replicas"]), deployment


def status_pattern(shown: str) -> re.Pattern[str]:
    """A shown line of `meshflow status` as a pattern: any numbers, any run folder."""
    parts = []
    for token in shown.split():
        escaped = re.sub(r"\d+", r"\\d+", re.escape(token.replace("/tmp/meshflow-x/", "RUN/")))
        parts.append(escaped.replace("RUN/", r"\S+/"))
    return re.compile(r"\s*" + r"\s+".join(parts) + "$")


def test_mesh_page_yaml_and_status(project: Path) -> None:
    """The page's YAML serves with `meshflow flow`; `meshflow status --name shop` and, from
    another folder, `meshflow status flow.yml` print what the page shows."""
    (project / "flow.yml").write_text(block(MESH, 3, "yaml"))
    shown = block(MESH, 5, "").splitlines()
    assert shown[0].startswith("$ meshflow status --name shop ")
    patterns = [status_pattern(line) for line in shown[1:]]
    with meshflow_flow("flow.yml", "--quiet", cwd=project, env=base_env()) as (proc, lines):
        assert "Flow 'shop' serving gRPC" in "".join(lines), "".join(lines)
        for folder, command in (
            (project, shlex.split(shown[0].split("#")[0].removeprefix("$ "))),
            (project.parent, ["meshflow", "status", "my-project/flow.yml"]),
        ):
            out = shell(folder, shlex.join(command)).rstrip("\n").splitlines()
            assert len(out) == len(shown) - 1 + 2, out  # three replicas where one is shown
            for line in out:
                assert any(p.match(line) for p in patterns), (line, shown)
            for pattern in patterns:
                assert any(pattern.match(line) for line in out), (pattern.pattern, out)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


# --- docs/observability.md ---------------------------------------------------------------

OBSERVABILITY = "docs/observability.md"


def test_observability_page(project: Path) -> None:
    """The Python Flow (metrics, tracing, no collector running) and the YAML's options serve,
    with `/metrics` and the targets file the page names; the access lines of both log
    formats look as shown; `meshflow export prometheus` writes a config from the YAML."""
    (project / "flow.yml").write_text(
        block(OBSERVABILITY, 1, "yaml") + "executors:\n  - uses: my_pkg.encoders:Encoder\n"
    )
    code = f"""
import json, pathlib, urllib.request
from meshflow import Document, DocumentArray, Flow
{block(OBSERVABILITY, 0, "python")}
f.log_dir = 'logs/text'
f.add(uses='my_pkg.encoders:Encoder', name='encoder')
g = Flow.load_config('flow.yml', log_dir='logs/json')
for flow in (f, g):
    with flow:
        post = 'mutation {{ post(on: "/", docs: [{{text: "a"}}]) {{ requestId }} }}'
        ask = json.dumps({{'query': post}}).encode()
        request = urllib.request.Request(flow.graphql_url, data=ask,
                                         headers={{'content-type': 'application/json'}})
        assert json.loads(urllib.request.urlopen(request, timeout=30).read())['data']
        flow.post('/', DocumentArray([Document(text='a')]))
        metrics = urllib.request.urlopen(flow.graphql_url.replace('/graphql', '/metrics'),
                                         timeout=30).read().decode()
        assert 'meshflow_gateway_requests_total' in metrics, metrics[:300]
        targets = json.loads(pathlib.Path(f'workspace/.meshflow/run/{{flow.name}}.targets.json')
                             .read_text())
        assert {{t['labels']['component'] for t in targets}} >= {{'gateway', 'executor'}}, targets
"""
    python(project, code)
    text, as_json = block(OBSERVABILITY, 3, "").splitlines()
    logs = {
        fmt: [
            line
            for path in (project / "logs" / fmt).rglob("*")
            if path.is_file()
            for line in path.read_text().splitlines()
            if "meshflow.access" in line
        ]
        for fmt in ("text", "json")
    }
    shown = re.sub(r"\d", "D", text.split(" trace=")[0].replace("5f0c...", "ID"))
    found = [re.sub(r"\d", "D", re.sub(r": \S+ ", ": ID ", line)) for line in logs["text"]]
    assert any(re.sub(r" D+\.D+ ms", " D.DD ms", line).startswith(shown) for line in found), (
        text,
        logs["text"],
    )
    keys = set(json.loads(as_json.replace('"...",', '"x",').replace('"5f0c..."', '"x"')))
    records = [json.loads(line) for line in logs["json"]]
    assert any(keys <= set(r) and r["door"] == "graphql" for r in records), (keys, records)
    done = shell(
        project, "meshflow export prometheus flow.yml --out prometheus.yml --scrape-interval 5s"
    )
    assert "targets.json" in (project / "prometheus.yml").read_text(), done
    assert listening(4317) is False  # the page's default collector was indeed absent


def test_observability_stack_files() -> None:
    """Needs docker: the files the commands name are the repository's, the stack's
    Prometheus reads the targets files of ./workspace (the Flow's default), and the gateway
    flags the page names exist."""
    commands = block(OBSERVABILITY, 2, "bash")
    compose = ROOT / re.search(r"-f (\S+)", commands).group(1)  # type: ignore[union-attr]
    assert compose.is_file()
    assert "../workspace/.meshflow/run:/meshflow/run" in compose.read_text()
    assert "/meshflow/run/*.targets.json" in (ROOT / "observability/prometheus.yml").read_text()
    help_text = shell(ROOT, "meshflow gateway --help")
    assert "--tracing" in help_text and "--trace-sampling" in help_text


# --- docs/deploy.md ----------------------------------------------------------------------

DEPLOY = "docs/deploy.md"

DEPLOY_FLOW = """
name: shop
with:
  metrics: true
  tracing: true
  auth:
    secret_env: MY_JWT_SECRET
    issuer: https://id.example
    audience: shop
executors:
  - name: encoder
    uses: my_pkg.encoders:Encoder
    replicas: 2
  - name: index
    uses: my_pkg.indexer:Indexer
    shards: 2
"""


def runnable_lines(commands: str, tool: str) -> tuple[str, list[str]]:
    """The lines of a block that run here, and those of `tool` (no container engine or
    kubectl on this machine), which are checked statically."""
    here, there = [], []
    for line in commands.splitlines():
        (there if line.startswith(tool) else here).append(line)
    return "\n".join(here), there


def table_column(page: str, header: str) -> list[str]:
    """The first column of the table whose header starts with `header`, without backticks."""
    text = (ROOT / page).read_text()
    rows = text.split(f"| {header} |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [re.findall(r"`([^`]+)`", row.split("|")[1]) for row in rows]  # type: ignore[misc]


def test_deploy_page_compose(project: Path) -> None:
    """The export lines run from the project folder (and its Python form writes the same
    files); the files the page lists are written, the services it lists are in the compose
    file, and the `docker compose` line names a file that exists."""
    (project / "flow.yml").write_text(DEPLOY_FLOW)
    here, docker = runnable_lines(block(DEPLOY, 0, "bash"), "docker ")
    shell(project.parent, here.replace("=...", "=s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t"))
    out = project / "deploy"
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    for names in table_column(DEPLOY, "file"):
        for name in names:
            pattern = re.escape(name).replace("<service>", r"[\w-]+")
            assert any(re.match(pattern, w) for w in written), (name, sorted(written))
    services = set(yaml.safe_load((out / "docker-compose.yml").read_text())["services"])
    expected = {"certs", "gateway", "gateway-sidecar", "jaeger", "prometheus", "grafana"}
    expected |= {f"encoder-s0-r{r}" for r in (0, 1)} | {f"index-s{s}-r0" for s in (0, 1)}
    expected |= {f"{name}-sidecar" for name in expected if name.startswith(("encoder", "index"))}
    assert services == expected, services
    [command] = docker
    assert "-f deploy/docker-compose.yml" in command
    python(
        project,
        "from meshflow import Flow\n"
        "f = Flow.load_config('flow.yml')\n"
        + re.search(r"# or (f\.to_docker_compose_yaml\([^)]*\))", here)
        .group(1)  # type: ignore[union-attr]
        .replace("deploy/", "again/")
        + "\n",
    )
    again = {
        str(p.relative_to(project / "again")) for p in (project / "again").rglob("*") if p.is_file()
    }
    assert again == written, again ^ written


def test_deploy_page_kubernetes(project: Path) -> None:
    """The export line runs with every option the page shows; the files the kubectl lines
    apply exist, the JWT Secret they create is the one the gateway reads, and the export
    prints how to build and push the image."""
    (project / "flow.yml").write_text(DEPLOY_FLOW)
    here, kubectl = runnable_lines(block(DEPLOY, 1, "bash"), "kubectl ")
    export = here.splitlines()[0].replace("[", "").replace("]", "")
    printed = shell(project, export)
    assert "docker build -f" in printed and "docker push" in printed, printed
    out = project / "k8s"
    for line in kubectl:
        for name in re.findall(r"-f (\S+)", line):
            assert (project / name).is_file(), name
        if "-k" in line:
            assert (out / "kustomization.yaml").is_file()
    assert (out / "certificates.yaml").is_file()  # --cert-manager
    secret = re.search(r"create secret generic (\S+) --from-literal=(\w+)=", " ".join(kubectl))
    assert secret is not None
    manifests = "\n".join(p.read_text() for p in out.glob("*.yaml"))
    assert f"name: {secret.group(1)}" in manifests and f"key: {secret.group(2)}" in manifests
    assert "namespace: shop" in manifests
    python(
        project,
        "from meshflow import Flow\n"
        "f = Flow.load_config('flow.yml')\n"
        + here.splitlines()[1].removeprefix("# or ").replace("k8s/", "again/")
        + "\n",
    )
    assert (project / "again" / "kustomization.yaml").is_file()


# --- services/*/README.md ----------------------------------------------------------------

IMAGE, TEXT = "services/image_encoder/README.md", "services/text_encoder/README.md"
VECTORS, RANKER = "services/vector_indexer/README.md", "services/ranker/README.md"
SHOP = "services/shop_the_look/README.md"


def test_services_encoders(project: Path) -> None:
    """Each encoder's Flow, as its README writes it, embeds a document (two Flows at once);
    the install lines name the torch pin and the extras meshflow declares."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = re.findall(r"^([\w-]+) = \[", section, flags=re.M)
    assert "models" in extras and "index" in extras, extras
    torch_pin = re.search(r"TORCH_PIN := (\S+)", (ROOT / "Makefile").read_text())
    assert torch_pin is not None
    for page, index in ((IMAGE, 0), (TEXT, 0), (VECTORS, 0)):
        for line in block(page, index, "bash").splitlines():
            package = shlex.split(line.split("#")[0])[2]
            if package.startswith("meshflow["):
                assert set(package[9:-1].split(",")) <= set(extras), line
            else:
                assert package == torch_pin.group(1), line
    image = np.random.default_rng(0).random((48, 64, 3)).tolist()
    procs = []
    for page, modality, dim in ((IMAGE, "image", 1280), (TEXT, "text", 384)):
        code = f"""
import numpy as np
from meshflow import Document, DocumentArray
{block(page, 1, "python")}
with f:
    doc = Document(text='red summer dress', tensor=np.array({image}, dtype=np.float32))
    [done] = f.post('/index', DocumentArray([doc]))
    [chunk] = done.chunks
    assert chunk.id == done.id + '/{modality}' and chunk.tags == {{'modality': '{modality}'}}
    assert chunk.embedding.shape == ({dim},), chunk.embedding.shape
    assert abs(float(np.linalg.norm(chunk.embedding)) - 1) < 1e-4
"""
        (project / f"{modality}.py").write_text(code)
        procs.append(
            subprocess.Popen(
                [sys.executable, f"{modality}.py"],
                cwd=project,
                env=base_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out
    finally:
        for proc in procs:
            stop_group(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def test_services_indexer_and_ranker(project: Path) -> None:
    """The VectorIndexer's Flow indexes, searches and counts; the Ranker after an indexer
    named `indexer` fuses a two-modality query's matches; the shop's GraphQL query runs
    against that Flow with its variables."""
    code = f"""
import json, urllib.request
import numpy as np
from meshflow import Document, DocumentArray
{block(VECTORS, 1, "python")}
rng = np.random.default_rng(0)
docs = DocumentArray(Document(id=f'd{{i}}', embedding=v)
                     for i, v in enumerate(rng.random((12, 512), dtype=np.float32)))
with f:
    [indexed] = f.post('/index', docs, return_responses=True)
    assert indexed.results['executor0'] == {{'indexed': 12}}, indexed.results
    [counted] = f.post('/count', return_responses=True)
    assert counted.results['executor0'] == {{'count': 12}}, counted.results
    [found] = f.post('/search', DocumentArray([Document(embedding=docs[5].embedding)]),
                     parameters={{'limit': 3}})
    assert [m.id for m in found.matches][:1] == ['d5'] and len(found.matches) == 3

from meshflow import Flow
f = Flow().add(uses='services.vector_indexer:VectorIndexer', name='indexer',
               uses_with={{'spaces': {{'image': 4, 'text': 4}}}})
{block(RANKER, 0, "python")}

def item(i, image, text):
    doc = Document(id=f'item{{i}}', text=f'item {{i}}')
    for modality, vector in (('image', image), ('text', text)):
        if vector is not None:
            doc.chunks.append(Document(id=f'item{{i}}/{{modality}}', tags={{'modality': modality}},
                                       embedding=np.array(vector, dtype=np.float32)))
    return doc

with f:
    f.post('/index', DocumentArray([item(0, [1, 0.1, 0, 0], [0, 1, 0.1, 0]),
                                    item(1, [1, 0, 0, 0], None),
                                    item(2, None, [0, 1, 0, 0]),
                                    item(3, [0, 0, 1, 0], [0, 0, 0, 1])]))
    [query] = f.post('/search', DocumentArray([item(9, [1, 0, 0, 0], [0, 1, 0, 0])]))
    assert query.matches[0].id == 'item0', [(m.id, m.scores) for m in query.matches]
    assert set(query.matches[0].scores) >= {{'fused', 'image', 'text'}}

# the app's typed search: its indexer and ranker declare the types the query uses
g = (Flow().add(uses='services.shop_the_look.executors:ShopIndexer', name='indexer',
                uses_with={{'spaces': {{'image': 4, 'text': 4}}}})
     .add(uses='services.shop_the_look.executors:ShopRanker', name='ranker'))
with g:
    body = json.dumps({{'query': {block(SHOP, 2, "graphql")!r},
                       'variables': {{'docs': [{{'text': 'red striped t-shirt'}}], 'limit': 5,
                                     'filter': {{'category': 'bag'}}}}}}).encode()
    request = urllib.request.Request(g.graphql_url, data=body,
                                     headers={{'content-type': 'application/json'}})
    answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    # valid against the schema; a text query needs the app's encoders to have vectors
    [error] = answer['errors']
    assert error['extensions']['code'] == 'EXECUTOR_ERROR', answer
    assert 'has no embedding in any space' in error['message'], answer
"""
    python(project, code)
    # the query `app.search` sends, which tests/integration/test_shop_the_look.py runs
    from services.shop_the_look.app import SEARCH

    assert block(SHOP, 2, "graphql").strip() == SEARCH.strip()


def test_shop_the_look_commands() -> None:
    """The demo's commands (minutes of indexing: run by tests/integration/test_shop_the_look.py)
    are the Makefile's and the options of the README's table are the command's."""
    commands = block(SHOP, 0, "bash").splitlines()
    assert commands[0].startswith("make demo ") and commands[0].endswith(
        "= python -m services.shop_the_look"
    )
    assert "\t$(PY) -m services.shop_the_look\n" in (ROOT / "Makefile").read_text()
    assert "--catalog DIR" in commands[1]
    run = [sys.executable, "-m", "services.shop_the_look"]
    env = {**base_env(), "PYTHONPATH": str(ROOT)}
    usage = subprocess.run(
        [*run, "--help"], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    options = [names[0].split()[0] for names in table_column(SHOP, "option")]
    assert options and all(option in usage for option in options), (options, usage)
    bad = subprocess.run([*run, "--bogus"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1].endswith("--bogus")
