"""The README's snippets, run as they are written, from a user's own project folder with
nothing but meshflow installed (no PYTHONPATH). The package they name (``my_pkg``) is the
user's: this test writes a small one."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import meshflow_flow, stop_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

MY_PKG = {
    "__init__.py": "",
    "encoders.py": """
import hashlib

import numpy as np

from meshflow import DocumentArray, Executor, requests


def vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return np.random.default_rng(seed).random(16).astype(np.float32)


class ImageEncoder(Executor):
    @requests
    def encode(self, docs: DocumentArray, **kwargs):
        for doc in docs:
            doc.embedding = vector(doc.text)


class TextEncoder(ImageEncoder):
    pass
""",
    "indexer.py": """
from meshflow import DocumentArray, Executor, requests


class Indexer(Executor):
    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs):
        return {"indexed": len(docs)}

    @requests(on="/search")
    def search(self, docs: DocumentArray, **kwargs):
        for doc in docs:
            doc.text += " (searched)"
""",
}


def sections() -> dict[str, list[tuple[str, str]]]:
    """The README's fenced blocks by section title, as (language, text)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found: dict[str, list[tuple[str, str]]] = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title = part.splitlines()[0].strip()
        found[title] = re.findall(r"^```(\w*)\n(.*?)^```", part, flags=re.M | re.S)
    return found


def block(section: str, language: str, index: int = 0) -> str:
    return [code for lang, code in sections()[section] if lang == language][index]


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` (connections of an earlier Flow in TIME_WAIT do not count:
    the servers bind with SO_REUSEADDR too)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(autouse=True)
def readme_ports() -> None:
    """The README names ports 50051 and 8080: wait for them to be free (another run of these
    tests on the same machine may hold them a while) rather than fail on a neighbour."""
    deadline = time.monotonic() + 60
    while not (port_free(50051) and port_free(8080)):
        assert time.monotonic() < deadline, "ports 50051 and 8080 stayed in use"
        time.sleep(0.5)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "my_pkg").mkdir(parents=True)
    for name, source in MY_PKG.items():
        (root / "my_pkg" / name).write_text(source)
    return root


def env() -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PATH": path}


def python(project: Path, source: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    script = project / "snippet.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_hello_world_prints_what_the_readme_says(project: Path) -> None:
    code = block("Hello, world", "python")
    expected = code.split("print(r.texts)  # ")[1].splitlines()[0]
    assert python(project, code).stdout.strip() == expected


def test_documents_snippet_runs(project: Path) -> None:
    python(project, block("Documents", "python"))


def test_executors_and_flows_snippets_run_together(project: Path) -> None:
    given = (
        "from meshflow import Document, DocumentArray, Flow\n"
        "catalog = DocumentArray(Document(text=f'item {i}') for i in range(20))\n"
        "queries = DocumentArray([Document(text='item 3')])\n"
    )
    tail = "\nprint(results.texts)\n"
    code = given + block("Executors", "python") + block("Flows", "python") + tail
    assert python(project, code, timeout=180).stdout.strip() == "['item 3']"


def test_flow_yaml_snippet_serves(project: Path, free_port: int) -> None:
    (project / "flow.yml").write_text(block("Flows", "yaml"))
    env_ = {**env(), "SHOP_PORT": str(free_port)}
    with meshflow_flow("flow.yml", "--quiet", cwd=project, env=env_) as (proc, lines):
        assert f"127.0.0.1:{free_port}" in "".join(lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_auth_walkthrough_and_its_client_line(project: Path) -> None:
    """The shell lines of the Auth section, then its Python line with the token they made."""
    client = block("Auth", "python")
    script = (
        block("Auth", "bash")
        + "\necho\nexport TOKEN\n"
        + f"{sys.executable} - <<'PY'\n"
        + "import os\nfrom meshflow import Document, DocumentArray\n"
        + "TOKEN = os.environ['TOKEN']\nqueries = DocumentArray([Document(text='red dress')])\n"
        + client
        + "print(docs.texts)\nPY\n"
    )
    log = project / "walkthrough.log"
    with open(log, "w", encoding="utf-8") as out_file:
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=project,
            env=env(),
            stdout=out_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=60)  # the background Flow keeps the output open: not communicate
        finally:
            # `meshflow flow flow.yml &` is still serving: stop the whole group (SIGTERM: a
            # background job of a script ignores SIGINT).
            stop_group(proc)
    out = log.read_text()
    assert proc.returncode == 0, out
    assert '"text":"red dress (searched)"' in out, out
    assert "['red dress (searched)']" in out, out


def test_mesh_options_snippet_scales(project: Path) -> None:
    given = (
        "from meshflow import Flow\n"
        "from my_pkg.encoders import TextEncoder as Encoder\n"
        "f = Flow()\n"
    )
    tail = "\n    print(len(f.describe()['deployments'][0]['replicas']))\n"
    code = given + block("Flows", "python", 1).rstrip("\n") + tail
    assert python(project, code, timeout=180).stdout.strip() == "5"


SERVE = """
import os, subprocess, sys
from meshflow import Document, DocumentArray, Flow
queries = DocumentArray([Document(text='red dress')])
many_docs = DocumentArray(Document(text=str(i)) for i in range(100))
f = Flow(port=50051).add(uses='my_pkg.indexer:Indexer')
with f:
    URL = f.graphql_url
"""


def test_clients_snippet_runs_against_a_flow(project: Path) -> None:
    sync, _, rest = block("Clients", "python").partition("async with")
    wrapped = "async def main():\n    async with" + rest.replace("\n", "\n    ").rstrip()
    code = (
        SERVE
        + "".join(f"    {line}\n" for line in sync.splitlines())
        + "".join(f"    {line}\n" for line in wrapped.splitlines())
        + "    import asyncio\n    asyncio.run(main())\n    print(docs.texts)\n"
    )
    assert python(project, code).stdout.strip() == "['red dress (searched)']"


def test_graphql_curl_snippet_answers(project: Path) -> None:
    curl = block("GraphQL", "bash")
    code = SERVE + (
        f"    out = subprocess.run(['bash', '-c', {curl!r}], env={{**os.environ, 'URL': URL}},\n"
        "                         capture_output=True, text=True, timeout=60)\n"
        "    print(out.stdout)\n"
    )
    answer = json.loads(python(project, code).stdout)
    [doc] = answer["data"]["post"]["docs"]
    assert set(doc) == {"id", "matches"} and doc["matches"] == []
