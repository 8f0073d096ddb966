"""The CLI from a user's own project folder, with nothing but meshflow installed: no
PYTHONPATH, the user's package next to the Flow YAML (issue 15)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshflow import Client, Document

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXECUTOR = """
from meshflow import DocumentArray, Executor, requests


class Shout(Executor):
    @requests
    def shout(self, docs: DocumentArray, **kwargs):
        for doc in docs:
            doc.text = doc.text.upper()
"""

FLOW = """\
jtype: Flow
name: shop
with:
  port: {port}
  mesh: direct
  auth:
    secret_file: jwt.secret
    issuer: https://id.example
    audience: shop
executors:
  - uses: my_pkg.shout:Shout
    name: shout
"""


def run(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "meshflow"), *args],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture
def project(tmp_path: Path, free_port: int) -> Path:
    root = tmp_path / "project"
    (root / "my_pkg").mkdir(parents=True)
    (root / "my_pkg" / "__init__.py").write_text("")
    (root / "my_pkg" / "shout.py").write_text(EXECUTOR)
    (root / "jwt.secret").write_text(os.urandom(32).hex())
    (root / "flow.yml").write_text(FLOW.format(port=free_port))
    return root


@contextlib.contextmanager
def serving(project: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`meshflow flow flow.yml` run in the project folder; yields it and its output so far,
    once serving. Killed at the end, however the block ends."""
    command = [os.path.join(os.path.dirname(sys.executable), "meshflow"), "flow", "flow.yml"]
    proc = subprocess.Popen(
        command,
        cwd=project,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("logs in"):
                break
        assert lines and lines[-1].startswith("logs in"), "".join(lines)
        yield proc, lines
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_cli_finds_the_users_package_without_pythonpath(project: Path, free_port: int) -> None:
    minted = run(project, "token", "--flow", "flow.yml", "--sub", "ana")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    with serving(project) as (proc, lines):
        printed = "".join(lines)
        page = printed.split("a page to try queries: ")[1].split(")")[0]
        # The URL printed opens the page in a browser, /graphql as well as /.
        for url in (page, page + "graphql"):
            answer = httpx.get(url, headers={"accept": "text/html"}, timeout=10)
            assert answer.status_code == 200 and "<title>meshflow GraphQL" in answer.text
        with Client(port=free_port, token=token, timeout=30) as client:
            assert client.post("/", Document(text="hi")).texts == ["HI"]
        # Status from the project folder and from anywhere else.
        here = run(project, "status", "flow.yml")
        assert here.returncode == 0 and "shout" in here.stdout, here.stderr
        elsewhere = run(project.parent, "status", "project/flow.yml")
        assert elsewhere.returncode == 0 and "shout" in elsewhere.stdout, elsewhere.stderr
        by_name = run(project.parent, "status", "--name", "shop")
        assert by_name.returncode == 2
        assert "--workspace" in by_name.stderr and "Traceback" not in by_name.stderr
        named = run(project.parent, "status", "--name", "shop", "--workspace", "project/workspace")
        assert named.returncode == 0 and "shout" in named.stdout, named.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    # The logs outlive the Flow, where it said.
    logs = Path(printed.split("logs in ")[1].split()[0])
    assert (logs / "gateway.log").exists()


def test_executor_command_serves_the_users_class(project: Path, free_port: int) -> None:
    command = [str(BIN / "meshflow"), "executor", "--uses", "my_pkg.shout:Shout"]
    proc = subprocess.Popen(
        [*command, "--port", str(free_port)],
        cwd=project,
        env=user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            pinged = run(project, "ping", f"127.0.0.1:{free_port}", "--timeout", "0.5")
            if pinged.returncode == 0:
                break
        assert pinged.returncode == 0 and "SERVING" in pinged.stdout
    finally:
        proc.kill()
        proc.wait()


def test_token_and_status_never_import_executor_code(project: Path, tmp_path: Path) -> None:
    (project / "my_pkg" / "shout.py").write_text("raise SystemExit('imported')\n")
    minted = run(tmp_path, "token", "--flow", "project/flow.yml", "--sub", "ana")
    assert minted.returncode == 0, minted.stderr
    assert minted.stdout.count(".") == 2
    status = run(tmp_path, "status", "project/flow.yml")
    assert status.returncode == 2
    assert "no running Flow found" in status.stderr and "imported" not in status.stderr


def test_status_of_a_yaml_needs_only_the_variables_it_reads(project: Path) -> None:
    text = (
        (project / "flow.yml").read_text().replace("  mesh: direct\n", "  mesh: ${{ ENV.MESH }}\n")
    )
    (project / "flow.yml").write_text(text)
    status = run(project, "status", "flow.yml")
    assert status.returncode == 2 and "no running Flow found" in status.stderr


def test_version_and_help_are_plain_text(project: Path) -> None:
    version = run(project, "--version")
    assert version.returncode == 0 and version.stdout.startswith("meshflow ")
    helped = run(project, "--help")
    assert helped.returncode == 0 and "``" not in helped.stdout


# -- exports -------------------------------------------------------------------------------------

TOOL = """
from meshflow import DocumentArray, Executor, requests


class Tool(Executor):
    @requests
    def tool(self, docs: DocumentArray, **kwargs):
        pass
"""


def exported_project(project: Path) -> Path:
    """The project with a file-form executor and static files, its flow.yml without auth
    key files (containers take keys from the environment)."""
    (project / "extra").mkdir()
    (project / "extra" / "tool.py").write_text(TOOL)
    (project / "web").mkdir()
    (project / "web" / "index.html").write_text("<h1>shop</h1>")
    (project / "requirements.txt").write_text("# the project's own dependencies\n")
    (project / "flow.yml").write_text(
        "jtype: Flow\nname: shop\nwith:\n  static: {/ui: web}\nexecutors:\n"
        "  - {uses: my_pkg.shout:Shout, name: shout}\n"
        "  - {uses: extra/tool.py:Tool, name: tool}\n"
    )
    return project


def compose_commands(path: Path) -> dict[str, list[str]]:
    import yaml

    services = yaml.safe_load(path.read_text())["services"]
    return {name: s["command"] for name, s in services.items() if "command" in s}


def test_exports_of_a_users_project_hold_its_code_at_image_paths(project: Path) -> None:
    exported_project(project)
    done = run(project, "export", "docker-compose", "flow.yml", "deploy")
    assert done.returncode == 0, done.stderr
    deploy = project / "deploy"
    dockerfile = (deploy / "Dockerfile").read_text()
    # meshflow is not in this project: the image installs a copy of the one that exported.
    assert "COPY deploy/.meshflow-dist /src/meshflow" in dockerfile
    assert "COPY . /app" in dockerfile and "PYTHONPATH=/app" in dockerfile
    assert "COPY requirements.txt" in dockerfile
    dist = deploy / ".meshflow-dist"
    assert (dist / "meshflow" / "cli" / "__init__.py").exists()
    assert (dist / "services" / "vector_indexer" / "executor.py").exists()
    assert "grpcio" in (dist / "pyproject.toml").read_text()
    assert (deploy / "observability" / "grafana" / "dashboards" / "meshflow.json").exists()
    commands = compose_commands(deploy / "docker-compose.yml")
    uses = {
        c[c.index("--name") + 1]: c[c.index("--uses") + 1]
        for c in commands.values()
        if c[0] == "executor"
    }
    assert uses == {"shout": "my_pkg.shout:Shout", "tool": "/app/extra/tool.py:Tool"}
    gateway = commands["gateway"]
    assert gateway[gateway.index("--static") + 1] == '{"/ui": "/app/web"}'
    # Kubernetes takes the static files too, from the image.
    k8s = run(
        project, "export", "kubernetes", "flow.yml", "k8s", "--image", "registry.local/shop:1"
    )
    assert k8s.returncode == 0, k8s.stderr
    assert "registry.local/shop:1" in (project / "k8s" / "gateway.yaml").read_text()
    assert "/app/web" in (project / "k8s" / "gateway.yaml").read_text()
    # What lies outside the project cannot be in the image: refused, with what to do.
    outside = run(project, "export", "docker-compose", "flow.yml", "out", "--context", "extra")
    assert outside.returncode == 2 and "outside the build context" in outside.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace (unshare -m)")
def test_the_exported_executor_commands_start_from_the_image_paths(
    project: Path, free_port: int
) -> None:
    """Each exported executor command, run where /app is the build context (a mount and
    network namespace): the image's paths and PYTHONPATH find the user's code."""
    exported_project(project)
    assert run(project, "export", "docker-compose", "flow.yml", "deploy").returncode == 0
    commands = compose_commands(project / "deploy" / "docker-compose.yml")
    made_app = not os.path.exists("/app")
    if made_app:
        os.mkdir("/app")
    try:
        for name in ("shout-s0-r0", "tool-s0-r0"):
            argv = " ".join(__import__("shlex").quote(a) for a in commands[name])
            script = (
                f"set -e; ip link set lo up; mount --bind {project} /app; cd /app\n"
                f"{BIN}/meshflow {argv} --workspace /tmp/ws-$$ & pid=$!\n"
                f"for i in $(seq 100); do {BIN}/meshflow ping 127.0.0.1:50051 --timeout 0.5 "
                ">/dev/null && break; sleep 0.2; done\n"
                f"{BIN}/meshflow ping 127.0.0.1:50051; kill $pid; wait $pid || true\n"
            )
            done = subprocess.run(
                ["unshare", "-m", "-n", "bash", "-c", script],
                env={**user_env(), "PYTHONPATH": "/app"},
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert "127.0.0.1:50051: SERVING" in done.stdout, done.stdout + done.stderr
    finally:
        if made_app:
            os.rmdir("/app")


def test_an_export_from_an_installed_wheel_builds_the_same(project: Path, tmp_path: Path) -> None:
    """meshflow installed from its wheel (not this checkout): the export vendors that
    meshflow and ships the Grafana dashboards the wheel installed."""
    import shutil

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("meshflow", "services", "observability"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    python = Path(sys.executable)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", wheels, source],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    # The dependencies from this environment (a plain path: its editable meshflow stays out).
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "grpc").exists())
    (site / "deps.pth").write_text(deps + "\n")
    wheel = next(wheels.glob("meshflow-*.whl"))
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--prefix", venv,
         wheel],  # --ignore-installed: never uninstall this environment's meshflow
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    exported_project(project)
    done = subprocess.run(
        [venv / "bin" / "python", "-m", "meshflow", "export", "docker-compose", "flow.yml",
         "deploy"],
        cwd=project, env=user_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    deploy = project / "deploy"
    assert (deploy / ".meshflow-dist" / "meshflow" / "cli" / "__init__.py").exists()
    assert (deploy / ".meshflow-dist" / "services" / "ranker" / "executor.py").exists()
    assert (deploy / "observability" / "grafana" / "dashboards" / "meshflow.json").exists()
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import meshflow; print(meshflow.__file__)"],
        cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
