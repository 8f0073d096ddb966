"""``hub://NAME@VERSION`` and ``hub://NAME>=1.2,<2``: which executor of the hub a Flow uses.

A reference names a project of the hub and the versions it takes: ``@VERSION`` (or
``==VERSION``) for one, any PEP 440 specifier set for several (the newest final release that
matches wins, pre-releases only when the specifier names one), nothing for the newest. A
``#sha256=HEX`` suffix (what ``meshflow hub lock`` writes) pins the wheel's content too::

    ref = HubRef.parse('hub://image-encoder>=1.2,<2')
    ref.name, str(ref.specifier)   # ('image-encoder', '<2,>=1.2')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from meshflow.errors import ConfigError

SCHEME = "hub://"
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


def is_hub_ref(uses: object) -> bool:
    """Whether a ``uses=`` value names a hub executor."""
    return isinstance(uses, str) and uses.startswith(SCHEME)


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hub://`` reference."""

    name: str
    """The project's name, normalised (PEP 503: lower case, runs of ``-_.`` as ``-``)."""
    specifier: SpecifierSet
    sha256: str | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> HubRef:
        if not is_hub_ref(text):
            raise ConfigError(f"{text!r} is not a hub reference; write 'hub://NAME@VERSION'")
        body, _, fragment = text[len(SCHEME) :].partition("#")
        sha = None
        if fragment:
            if not fragment.startswith("sha256=") or not re.fullmatch(
                r"[0-9a-f]{64}", fragment[7:]
            ):
                raise ConfigError(f"{text!r}: the part after '#' must be sha256=<64 hex digits>")
            sha = fragment[7:]
        match = re.match(r"^([A-Za-z0-9._-]+)\s*(.*)$", body.strip())
        if match is None or not _NAME.match(match.group(1)):
            raise ConfigError(
                f"{text!r}: no executor name; write 'hub://NAME@VERSION' or 'hub://NAME>=1.2,<2'"
            )
        name, rest = match.group(1), match.group(2).strip()
        if rest.startswith("@"):
            version = rest[1:].strip()
            try:
                Version(version)
            except InvalidVersion:
                raise ConfigError(
                    f"{text!r}: {version!r} is not a version (PEP 440), e.g. 1.2.0"
                ) from None
            rest = f"=={version}"
        try:
            spec = SpecifierSet(rest)
        except InvalidSpecifier:
            raise ConfigError(
                f"{text!r}: {rest!r} is not a version specifier (PEP 440), e.g. '>=1.2,<2'"
            ) from None
        return cls(canonicalize_name(name), spec, sha, text)

    def pinned(self) -> str | None:
        """The one version this reference allows (``==X``), or None when it allows a range."""
        specs = list(self.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
            return specs[0].version
        return None

    def __str__(self) -> str:
        return self.text or f"{SCHEME}{self.name}{self.specifier}"
