"""The hub's errors: each is a :class:`~meshflow.errors.ConfigError` (bad input, found before
anything runs; ``meshflow hub ...`` exits with status 2) that says what to do about it.

::

    ConfigError
    └── HubError                 anything the hub refuses
        ├── UnknownExecutorError   no project of that name in the hub (close names listed)
        ├── VersionNotFoundError   no version matches the reference (available ones listed)
        ├── HubUnreachableError    the index cannot be read, and nothing cached can stand in
        ├── MissingMetadataError   a wheel without ``meshflow-executor.json``
        ├── HashMismatchError      a file whose sha256 is not what the index (or lock) says
        └── EnvironmentBuildError  uv/pip could not install the requirements (their reason)
"""

from __future__ import annotations

from meshflow.errors import ConfigError


class HubError(ConfigError):
    """Base of the hub's errors."""


class UnknownExecutorError(HubError):
    """The hub has no project of that name."""


class VersionNotFoundError(HubError):
    """The hub has the project, but no version that matches."""


class HubUnreachableError(HubError):
    """The index could not be read (and no cached file can stand in)."""


class MissingMetadataError(HubError):
    """A wheel that is not a meshflow executor: no ``meshflow-executor.json`` inside."""


class HashMismatchError(HubError):
    """A file whose content is not what its recorded sha256 says."""


class EnvironmentBuildError(HubError):
    """The installer (uv, or pip) failed; the message carries its reason."""
