"""Flow YAML: load and save, with ``${{ ENV.VAR }}`` substitution and errors that point at
the file, line and key.

::

    name: shop
    with:                      # Flow(...) options
      port: ${{ ENV.PORT }}
    executors:
      - name: encoder
        uses: my_pkg.encoders:TextEncoder
        uses_with: {model: small}
      - name: indexer
        uses: my_pkg.index:Indexer
        shards: 2
        polling: {/index: ID, /search: ALL}
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from meshflow.errors import ConfigError
from meshflow.flow.flow import Flow
from meshflow.gateway.topology import check_spec
from meshflow.spec.auth import SECRET_KEYS, JWTAuth
from meshflow.spec.flow import EXECUTOR_KEYS, WITH_KEYS, FlowSpec

_ENV = re.compile(r"\$\{\{\s*ENV\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
FLOW_KEYS = {"jtype", "version", "name", "with", "executors"}


class _Located:
    """Python values built from YAML nodes, remembering where each key was written."""

    def __init__(self, path: str, *, strict: bool = True) -> None:
        self.path = path
        self.lines: dict[str, int] = {}
        self.unset: dict[str, str] = {}
        """Keys whose value names an unset environment variable (when not ``strict``)."""
        self.strict = strict
        self._loader = yaml.SafeLoader("")

    def error(self, key: str, message: str) -> ConfigError:
        line = self.lines.get(key)
        where = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{where}: {key}: {message}")

    def build(self, node: yaml.Node, key: str) -> Any:
        self.lines.setdefault(key, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k_node, v_node in node.value:
                k = self.build(k_node, key)
                child = f"{key}.{k}" if key else str(k)
                self.lines[child] = k_node.start_mark.line + 1
                out[k] = self.build(v_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        value = self._loader.construct_object(node)
        if isinstance(value, str) and "${{" in value:
            return self._substitute(value, key)
        return value

    def _substitute(self, text: str, key: str) -> Any:
        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                if self.strict:
                    raise self.error(key, f"environment variable {name} is not set")
                self.unset[key] = name
                return ""
            return os.environ[name]

        whole = _ENV.fullmatch(text.strip())
        replaced = _ENV.sub(repl, text)
        if whole:
            # A value that is only ${{ ENV.X }} takes the YAML type of what X holds.
            return yaml.safe_load(replaced) if replaced.strip() else replaced
        return replaced


@dataclass(frozen=True)
class FlowHeader:
    """What a Flow YAML says about the Flow itself, read without importing any executor."""

    name: str
    workspace: str
    auth: JWTAuth | None


def read_flow_header(path: str) -> FlowHeader:
    """The name, workspace and auth of the Flow YAML at ``path``, for commands that talk to a
    Flow (``meshflow status``, ``meshflow token --flow``) rather than start it: no executor
    code is imported, and environment variables are needed only by the keys read."""
    loc = _Located(path, strict=False)
    data, options = _read(path, loc)
    here = os.path.dirname(os.path.abspath(path))
    for key, name in loc.unset.items():
        if key in ("name", "with.workspace") or key.startswith("with.auth."):
            raise loc.error(key, f"environment variable {name} is not set")
    auth = None
    if options.get("auth") is not None:
        try:
            auth = JWTAuth.from_dict(options["auth"]).with_paths_from(here)
        except ConfigError as exc:
            raise loc.error("with.auth", str(exc).removeprefix("auth: ")) from None
    workspace = options.get("workspace", "workspace")
    if not isinstance(workspace, str):
        raise loc.error("with.workspace", "must be a folder path")
    return FlowHeader(
        name=str(data.get("name") or "flow"),
        workspace=os.path.join(here, workspace),
        auth=auth,
    )


def _read(path: str, loc: _Located) -> tuple[dict[str, Any], dict[str, Any]]:
    """The YAML at ``path`` as a mapping, and its ``with:`` options, keys checked."""
    try:
        with open(path, encoding="utf-8") as fh:
            node = yaml.compose(fh, Loader=yaml.SafeLoader)
    except OSError as exc:
        raise ConfigError(f"cannot read Flow config {path!r}: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc.problem}") from None
    data = loc.build(node, "") if node is not None else None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a Flow config is a mapping with 'executors:' (and 'with:')")
    for key in data:
        if key not in FLOW_KEYS:
            raise loc.error(str(key), f"unknown key; allowed: {', '.join(sorted(FLOW_KEYS))}")
    if data.get("jtype", "Flow") != "Flow":
        raise loc.error("jtype", "only 'Flow' is supported")
    options = data.get("with") or {}
    if not isinstance(options, dict):
        raise loc.error("with", "must be a mapping of Flow options")
    for key in options:
        if key not in WITH_KEYS:
            raise loc.error(
                f"with.{key}", f"unknown option; allowed: {', '.join(sorted(WITH_KEYS))}"
            )
    return data, options


def load_flow(
    path: str, *, port: int | None = None, overrides: Mapping[str, Any] | None = None
) -> Flow:
    """Read a Flow YAML file; ``port`` overrides the gateway port it sets, ``overrides`` any
    of its ``with:`` options (``workspace``, ``graphql_port``...).

    Paths written in the file (``workspace``, ``static`` folders, ``secret_file``, ``uses``
    files, the persisted query manifest) are relative to the file; the workspace is
    ``workspace/`` next to it by default.
    """

    loc = _Located(path)
    data, options = _read(path, loc)
    here = os.path.dirname(os.path.abspath(path))
    options["workspace"] = os.path.join(here, options.get("workspace", "workspace"))
    if port is not None:
        options["port"] = port
    for key, value in (overrides or {}).items():
        if key not in WITH_KEYS:
            raise ConfigError(
                f"unknown Flow option {key!r}; allowed: {', '.join(sorted(WITH_KEYS))}"
            )
        options[key] = value
    if options.get("auth") is not None:
        for secret in SECRET_KEYS:
            if isinstance(options["auth"], dict) and secret in options["auth"]:
                raise loc.error(
                    f"with.auth.{secret}",
                    "key material cannot be written in a config; name where it is instead "
                    "(secret_env, secret_file, public_key_env, public_key_file, jwks_file)",
                )
        try:
            options["auth"] = JWTAuth.from_dict(options["auth"]).with_paths_from(
                os.path.dirname(os.path.abspath(path))
            )
        except ConfigError as exc:
            raise loc.error("with.auth", str(exc).removeprefix("auth: ")) from None
    if isinstance(options.get("static"), dict):  # folders are relative to this file
        here = os.path.dirname(os.path.abspath(path))
        options["static"] = {
            k: os.path.join(here, v) if isinstance(v, str) else v
            for k, v in options["static"].items()
        }
    persisted = options.get("persisted_queries")
    if isinstance(persisted, dict) and isinstance(persisted.get("manifest"), str):
        here = os.path.dirname(os.path.abspath(path))  # relative to this file
        options["persisted_queries"] = {
            **persisted,
            "manifest": os.path.join(here, persisted["manifest"]),
        }
    try:
        flow = Flow(name=data.get("name"), **options)
    except (ConfigError, TypeError) as exc:
        raise loc.error("with", str(exc)) from None
    executors = data.get("executors")
    if not isinstance(executors, list) or not executors:
        raise loc.error("executors", "must be a non-empty list of executors")
    base = os.path.dirname(os.path.abspath(path))
    pins = _hub_pins(path, executors)
    for i, spec in enumerate(executors):
        key = f"executors[{i}]"
        if not isinstance(spec, dict):
            raise loc.error(key, "must be a mapping with at least 'uses:'")
        for k in spec:
            if k not in EXECUTOR_KEYS:
                raise loc.error(
                    f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(EXECUTOR_KEYS))}"
                )
        if "uses" not in spec:
            raise loc.error(key, "missing 'uses:'")
        spec = dict(spec)
        uses = spec.pop("uses")
        if isinstance(uses, str):
            uses = pins.get(uses) or _relative(uses, base)
        try:
            flow.add(uses, **spec)
        except ConfigError as exc:
            raise loc.error(f"{key}.uses" if "uses" in str(exc) else key, str(exc)) from None
        except TypeError as exc:
            raise loc.error(key, str(exc)) from None
    try:
        flow.check()
    except ConfigError as exc:
        raise loc.error("executors", str(exc)) from None
    return flow


def _hub_pins(path: str, executors: Any) -> dict[str, str]:
    """The Flow's ``hub://`` references pinned by its lock file (``meshflow hub lock``)."""
    if not any(
        isinstance(e, dict) and str(e.get("uses", "")).startswith("hub://") for e in executors or ()
    ):
        return {}
    from meshflow.hub.lock import read_lock  # lazy: only Flows that use the hub

    return read_lock(path)


def _relative(uses: str, base: str) -> str:
    """Paths in a Flow YAML (``file.py:Class``, ``executor.yml``) are relative to the file."""
    if uses.endswith((".yml", ".yaml")):
        candidate = uses
    else:
        module, sep, _ = uses.rpartition(":")
        if not (sep and module.endswith(".py")):
            return uses
        candidate = module
    if os.path.isabs(candidate):
        return uses
    return os.path.join(base, uses)


def save_flow(spec: FlowSpec, path: str) -> None:
    """Write ``spec`` as YAML that :func:`load_flow` reads back: every option that differs
    from its default (the workspace relative to the file, as :func:`load_flow` reads it)."""
    check_spec(spec)
    here = os.path.dirname(os.path.abspath(path))
    workspace = os.path.relpath(os.path.abspath(spec.workspace), here)
    options = dataclasses.replace(spec, workspace=workspace).options()
    data: dict[str, Any] = {"jtype": "Flow", "name": spec.name}
    if options:
        data["with"] = options
    data["executors"] = [d.to_dict() for d in spec.deployments]
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
