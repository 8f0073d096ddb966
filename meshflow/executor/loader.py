"""Find the Executor class a ``uses=`` names.

``uses`` is one of: an Executor class; ``'pkg.module:Class'``; ``'path/to/file.py:Class'``;
or ``'path/to/executor.yml'`` holding ``uses:`` (one of the string forms) and ``with:``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Any

from meshflow.errors import ConfigError
from meshflow.executor.executor import Executor


def class_ref(cls: type) -> str | None:
    """``'module:QualName'`` when a fresh interpreter can import ``cls`` by name, else None."""
    module = getattr(cls, "__module__", "")
    qualname = getattr(cls, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname:
        return None
    mod = sys.modules.get(module)
    if mod is None or getattr(mod, "__spec__", None) is None:
        return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is cls else None


def read_executor_yaml(path: str) -> tuple[str, dict[str, Any]]:
    """Read an executor YAML file: returns its ``uses`` string and ``with`` arguments."""
    import yaml  # lazy: only executors configured by a YAML file (1.4 MB of imports)

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read executor config {path!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"executor config {path!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("uses"), str):
        raise ConfigError(
            f"executor config {path!r} needs a 'uses:' key naming the class, "
            "e.g. 'uses: my_pkg.encoders:TextEncoder'"
        )
    unknown = set(data) - {"uses", "with"}
    if unknown:
        raise ConfigError(
            f"executor config {path!r} has unknown key(s) {', '.join(sorted(unknown))}; "
            "allowed: uses, with"
        )
    uses_with = data.get("with") or {}
    if not isinstance(uses_with, dict):
        raise ConfigError(f"executor config {path!r}: 'with:' must be a mapping")
    uses = data["uses"]
    # A file path inside the YAML is relative to the YAML file.
    module_part, sep, attr = uses.rpartition(":")
    if sep and module_part.endswith(".py") and not os.path.isabs(module_part):
        uses = os.path.join(os.path.dirname(os.path.abspath(path)), module_part) + ":" + attr
    return uses, uses_with


def load_class(ref: str) -> type[Executor]:
    """Import the Executor class named by ``'pkg.module:Class'`` or ``'file.py:Class'``."""
    module_part, sep, qualname = ref.rpartition(":")
    if not sep or not module_part or not qualname:
        raise ConfigError(
            f"uses={ref!r} is not a class reference; write 'pkg.module:Class', "
            "'path/to/file.py:Class' or 'path/to/executor.yml'"
        )
    if module_part.endswith(".py"):
        module = _import_file(module_part, ref)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            if exc.name and module_part.startswith(exc.name):
                raise ConfigError(
                    f"uses={ref!r}: no module named {exc.name!r}; check the spelling and that "
                    f"its package is installed or on PYTHONPATH{_shadowed(module_part)}"
                ) from None
            raise
    obj: Any = module
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"uses={ref!r}: module {module_part!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    return check_executor_class(obj, ref)


def _shadowed(module_part: str) -> str:
    """A hint when the top package of ``module_part`` was found somewhere else than in a
    folder of that name in the working folder (an installed package of the same name, and a
    folder without ``__init__.py``, which Python then never looks into)."""
    top = module_part.split(".")[0]
    folder = os.path.join(os.getcwd(), top)
    found = sys.modules.get(top)
    locations = list(getattr(found, "__path__", None) or ())
    if "." not in module_part or not os.path.isdir(folder) or found is None:
        return ""
    if any(os.path.realpath(p) == os.path.realpath(folder) for p in locations):
        return ""
    where = locations[0] if locations else getattr(found, "__file__", "elsewhere")
    return (
        f"; the package {top!r} imported is {where}, which hides the folder {folder}: give "
        "that folder an __init__.py (the working folder comes first then) or another name"
    )


def check_executor_class(obj: Any, ref: str) -> type[Executor]:
    """Return ``obj`` when it is an Executor subclass, else raise a ConfigError."""
    if not (isinstance(obj, type) and issubclass(obj, Executor)):
        raise ConfigError(
            f"uses={ref!r} is {obj!r}, not an Executor subclass; derive it from meshflow.Executor"
        )
    return obj


def _import_file(path: str, ref: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise ConfigError(f"uses={ref!r}: no such file {full!r}")
    name = "meshflow_user_" + hashlib.sha1(full.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise ConfigError(f"uses={ref!r}: {full!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Let the file import its neighbours, as it would when run as a script.
    sys.path.insert(0, os.path.dirname(full))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(os.path.dirname(full))
    return module
