"""The images of a Flow's hub executors: one per executor version, holding meshflow and that
executor's own requirements, nothing of the Flow's other executors.

For each ``hub://`` deployment the export resolves the version the Flow would start (the
lock file's, when the Flow YAML has one), builds or finds its environment, and writes into
``OUTDIR/hub/NAME-VERSION/``:

- the executor's wheel, and the wheels of its requirements that the hub holds (a folder hub
  is not reachable from ``docker build``; an index URL is, as ``--extra-index-url``);
- ``constraints.txt``: the exact versions its local environment resolved to, so that the
  image installs what was tested;
- ``Dockerfile``: meshflow (as in the Flow's image) plus ``pip install`` of the wheel under
  those constraints. Its tag is ``meshflow-hub-NAME:VERSION``.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename

from meshflow.deploy.images import (
    APP,
    BUILD_STAGE,
    PYTHON_IMAGE,
    RUNTIME_STAGE,
    UID,
    BuildContext,
    meshflow_sources,
    pinned_runtime,
)
from meshflow.spec.flow import FlowSpec


@dataclass(frozen=True)
class HubImage:
    """The image of one hub deployment."""

    deployment: str
    name: str
    version: str
    tag: str
    uses: str
    """The class inside the image (``package.module:Class``)."""
    dockerfile: str
    context: str

    def compose_build(self, out_dir: str) -> dict[str, Any]:
        """The ``image:`` and ``build:`` keys of its docker-compose services."""
        relative = os.path.relpath(self.context, out_dir)
        return {
            "image": self.tag,
            "build": {
                "context": relative if relative.startswith(".") else f"./{relative}",
                "dockerfile": os.path.relpath(self.dockerfile, self.context),
            },
        }


def hub_tag(name: str, version: str) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-.")
    return f"meshflow-hub-{slug}:{version}"


def hub_images(
    spec: FlowSpec, context: BuildContext, out_dir: str
) -> tuple[dict[str, HubImage], list[str]]:
    """The image of every hub deployment of ``spec`` (by deployment), and the files written."""
    from meshflow.hub.prepare import hub_deployments, prepare  # lazy: only Flows that use it

    refs = hub_deployments(spec)
    if not refs:
        return {}, []
    prepared = prepare(refs)
    images: dict[str, HubImage] = {}
    written: list[str] = []
    for deployment, hub in prepared.items():
        folder = os.path.join(out_dir, "hub", f"{canonicalize_name(hub.name)}-{hub.version}")
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        wheels = [_copy(hub.resolved.wheel, folder)]
        freeze = [
            line
            for line in hub.environment.manifest().get("installed", [])
            if "==" in line
            and canonicalize_name(line.split("==")[0]) != canonicalize_name(hub.name)
        ]
        wheels += _requirement_wheels(hub.resolved.wheel, freeze, folder)
        constraints = os.path.join(folder, "constraints.txt")
        with open(constraints, "w", encoding="utf-8") as fh:
            fh.write(f"# {hub.name} {hub.version}: what its environment resolved to\n")
            fh.write("".join(f"{line}\n" for line in freeze))
        dockerfile = os.path.join(folder, "Dockerfile")
        copies, vendored = meshflow_sources(context, dockerfile)
        inside = context.inside(folder, f"the image of hub executor {hub.name}")
        index_url = hub.index_url if hub.index_url.startswith(("http://", "https://")) else None
        text = _dockerfile(
            hub.name,
            hub.version,
            hub.resolved.sha256,
            deployment,
            copies,
            inside.removeprefix(APP + "/"),
            [os.path.basename(w) for w in wheels],
            index_url,
        )
        with open(dockerfile, "w", encoding="utf-8") as fh:
            fh.write(text)
        written += [*vendored, *wheels, constraints, dockerfile]
        images[deployment] = HubImage(
            deployment=deployment,
            name=hub.name,
            version=hub.version,
            tag=hub_tag(hub.name, hub.version),
            uses=hub.executor,
            dockerfile=dockerfile,
            context=context.root,
        )
    return images, written


def _copy(path: str, folder: str) -> str:
    target = os.path.join(folder, os.path.basename(path))
    shutil.copyfile(path, target)
    return target


def _requirement_wheels(wheel: str, freeze: list[str], out: str) -> list[str]:
    """Copy into ``out`` the wheels of pinned requirements that sit in the same folder hub
    as ``wheel`` (a folder hub is not reachable from ``docker build``)."""
    simple = os.path.dirname(os.path.dirname(wheel))
    if os.path.basename(simple) != "simple":
        return []
    copied = []
    for line in freeze:
        name, _, version = line.partition("==")
        project = os.path.join(simple, canonicalize_name(name))
        if not os.path.isdir(project):
            continue
        for filename in os.listdir(project):
            if filename.endswith(".whl"):
                _, v, _, _ = parse_wheel_filename(filename)
                if str(v) == version.strip():
                    copied.append(_copy(os.path.join(project, filename), out))
    return copied


def _dockerfile(
    name: str,
    version: str,
    sha256: str,
    deployment: str,
    copies: list[str],
    folder: str,
    wheels: list[str],
    index_url: str | None,
) -> str:
    find = "--find-links /src/hub"
    extra = f" --extra-index-url {index_url}" if index_url else ""
    lines = [
        f"# Generated by meshflow export: the image of hub executor {name} {version} (deployment",
        f"# {deployment!r}): meshflow and this executor's own requirements, nothing else.",
        "# Build it from the project's folder (the build context); docker-compose does.",
        "",
        f"ARG PYTHON_IMAGE={PYTHON_IMAGE}",
        "",
        *BUILD_STAGE,
        *copies,
        f"RUN /opt/meshflow/bin/pip install /src/meshflow {pinned_runtime()}".rstrip(),
        f"COPY {folder}/ /src/hub/",
        f"RUN /opt/meshflow/bin/pip install {find}{extra} \\",
        f"    --constraint /src/hub/constraints.txt /src/hub/{wheels[0]}",
        "",
        *RUNTIME_STAGE,
        f'LABEL org.opencontainers.image.title="{name}" \\',
        f'      org.opencontainers.image.version="{version}" \\',
        f'      io.meshflow.hub.sha256="{sha256}"',
        "ENV PATH=/opt/meshflow/bin:$PATH \\",
        "    PYTHONUNBUFFERED=1 \\",
        "    HF_HUB_OFFLINE=1",
        "WORKDIR /workspace",
        f"USER {UID}:{UID}",
        'ENTRYPOINT ["meshflow"]',
        'CMD ["--help"]',
        "",
    ]
    return "\n".join(lines)
