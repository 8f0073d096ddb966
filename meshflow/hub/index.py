"""The hub is a Python package index: a folder laid out as a PEP 503 "simple" index, or the URL
of any simple index (pypiserver, devpi, a company's private index).

Only wheels count. A folder hub looks like this (pip and uv install from it with
``--index-url file:///…/simple``)::

    ~/.meshflow/hub/simple/index.html                     links to every project
    ~/.meshflow/hub/simple/echo-exec/index.html           links to its wheels, #sha256=…
    ~/.meshflow/hub/simple/echo-exec/echo_exec-1.0.0-py3-none-any.whl

A remote hub is read over HTTP (``GET <url>/<project>/``) and pushed to with twine, the
standard upload client (``TWINE_USERNAME`` / ``TWINE_PASSWORD`` as usual).
"""

from __future__ import annotations

import contextlib
import html
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import Version

from meshflow.errors import ConfigError
from meshflow.hub.errors import HashMismatchError, HubUnreachableError
from meshflow.hub.metadata import read_wheel, sha256_file

HTTP_TIMEOUT = 10.0


@dataclass(frozen=True)
class DistFile:
    """One wheel of one project in a hub."""

    project: str
    version: Version
    filename: str
    url: str
    sha256: str | None


class Hub(Protocol):
    """What meshflow needs of an index: read it, push to it, point an installer at it."""

    location: str

    @property
    def index_url(self) -> str: ...

    def projects(self) -> list[str]: ...

    def files(self, project: str) -> list[DistFile]: ...

    def push(self, wheel: str) -> DistFile:
        """Publish an executor's wheel (refused without executor metadata)."""
        ...

    def add(self, wheel: str) -> DistFile:
        """Publish any wheel (a library that executors' requirements need)."""
        ...


def open_hub(location: str | None = None) -> Hub:
    """The hub at ``location``: an ``http(s)://`` simple index URL, or a folder (created when
    pushed to). None: ``MESHFLOW_HUB``, else ``~/.meshflow/hub``."""
    location = location or os.environ.get("MESHFLOW_HUB") or default_hub_folder()
    if location.startswith(("http://", "https://")):
        return RemoteHub(location)
    if location.startswith("file://"):
        location = urllib.parse.urlsplit(location).path
        if location.rstrip("/").endswith("/simple"):
            location = os.path.dirname(location.rstrip("/"))
    return FolderHub(location)


def default_hub_folder() -> str:
    return os.path.join(os.path.expanduser("~"), ".meshflow", "hub")


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _parse_links(text: str) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(text)
    return parser.links


def _dist_file(project: str, base: str, href: str) -> DistFile | None:
    url = urllib.parse.urljoin(base, href)
    path, _, fragment = url.partition("#")
    filename = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if not filename.endswith(".whl"):
        return None
    try:
        name, version, _build, _tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    if canonicalize_name(name) != project:
        return None
    sha = fragment[7:] if fragment.startswith("sha256=") else None
    return DistFile(project, version, filename, path, sha)


def _write_page(path: str, title: str, links: list[tuple[str, str]]) -> None:
    body = "\n".join(
        f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br/>' for href, text in links
    )
    page = (
        "<!DOCTYPE html>\n<html>\n  <head><title>"
        + html.escape(title)
        + "</title></head>\n  <body>\n"
        + body
        + "\n  </body>\n</html>\n"
    )
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".index-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, path)


class FolderHub:
    """A hub in a folder: a PEP 503 simple index that needs no server."""

    def __init__(self, root: str) -> None:
        self.location = os.path.abspath(os.path.expanduser(root))
        self.simple = os.path.join(self.location, "simple")

    def __repr__(self) -> str:
        return f"FolderHub({self.location!r})"

    @property
    def index_url(self) -> str:
        return "file://" + urllib.parse.quote(self.simple)

    def projects(self) -> list[str]:
        if not os.path.isdir(self.simple):
            return []
        return sorted(
            d
            for d in os.listdir(self.simple)
            if os.path.isfile(os.path.join(self.simple, d, "index.html"))
        )

    def files(self, project: str) -> list[DistFile]:
        page = os.path.join(self.simple, canonicalize_name(project), "index.html")
        try:
            with open(page, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return []
        base = "file://" + urllib.parse.quote(os.path.dirname(page)) + "/"
        found = (_dist_file(canonicalize_name(project), base, h) for h, _ in _parse_links(text))
        return sorted((f for f in found if f is not None), key=lambda f: f.version)

    def push(self, wheel: str) -> DistFile:
        meta = read_wheel(wheel)  # refuses a wheel that is not an executor
        return self.add(wheel, project=canonicalize_name(meta.name))

    def add(self, wheel: str, *, project: str | None = None) -> DistFile:
        """Put any wheel in the index (an executor's, or a library its requirements need)."""
        filename = os.path.basename(wheel)
        name, version, _, _ = parse_wheel_filename(filename)
        project = project or canonicalize_name(name)
        folder = os.path.join(self.simple, project)
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, filename)
        sha = sha256_file(wheel)
        if os.path.exists(target) and sha256_file(target) != sha:
            raise ConfigError(
                f"{self.location} already holds {filename} with other content; a published "
                "version never changes: raise the version in pyproject.toml and push again"
            )
        if os.path.abspath(wheel) != target:
            shutil.copyfile(wheel, target + ".part")
            os.replace(target + ".part", target)
        self._reindex(project)
        return DistFile(project, version, filename, "file://" + target, sha)

    def _reindex(self, project: str) -> None:
        folder = os.path.join(self.simple, project)
        links = [
            (f"{f}#sha256={sha256_file(os.path.join(folder, f))}", f)
            for f in sorted(os.listdir(folder))
            if f.endswith(".whl")
        ]
        _write_page(os.path.join(folder, "index.html"), f"Links for {project}", links)
        _write_page(
            os.path.join(self.simple, "index.html"),
            "Simple index",
            [(f"{p}/", p) for p in self.projects()],
        )


class RemoteHub:
    """A hub behind any simple index URL, e.g. ``http://127.0.0.1:8080/simple/``."""

    def __init__(self, url: str) -> None:
        self.location = url if url.endswith("/") else url + "/"

    def __repr__(self) -> str:
        return f"RemoteHub({self.location!r})"

    @property
    def index_url(self) -> str:
        return self.location

    @property
    def upload_url(self) -> str:
        """Where twine uploads: the server's root for an index served under ``/simple/``."""
        url = self.location
        return url[: -len("simple/")] if url.endswith("/simple/") else url

    def _get(self, url: str) -> str | None:
        request = urllib.request.Request(url, headers={"Accept": "text/html"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                return str(answer.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise HubUnreachableError(
                f"the hub {self.location} answered {exc.code} {exc.reason} for {url}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HubUnreachableError(
                f"the hub {self.location} cannot be reached ({reason}); check the URL and "
                "that the index is up (executors whose environments are cached still start)"
            ) from None

    def projects(self) -> list[str]:
        text = self._get(self.location)
        if text is None:
            return []
        return sorted({canonicalize_name(t.strip("/")) for _, t in _parse_links(text) if t})

    def files(self, project: str) -> list[DistFile]:
        url = urllib.parse.urljoin(self.location, canonicalize_name(project) + "/")
        text = self._get(url)
        if text is None:
            return []
        found = (_dist_file(canonicalize_name(project), url, h) for h, _ in _parse_links(text))
        return sorted((f for f in found if f is not None), key=lambda f: f.version)

    def push(self, wheel: str) -> DistFile:
        meta = read_wheel(wheel)
        return self.add(wheel, project=canonicalize_name(meta.name))

    def add(self, wheel: str, *, project: str | None = None) -> DistFile:
        """Upload any wheel with twine."""
        env = dict(os.environ)
        # pypiserver started without authentication still wants a user name from twine
        env.setdefault("TWINE_USERNAME", "meshflow")
        env.setdefault("TWINE_PASSWORD", "-")
        command = [
            sys.executable,
            "-m",
            "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            self.upload_url,
            wheel,
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=120, check=False
            )
        except FileNotFoundError:  # pragma: no cover - sys.executable exists
            raise ConfigError("cannot run twine") from None
        if done.returncode != 0:
            out = (done.stdout + done.stderr).strip()
            if "No module named twine" in out:
                raise ConfigError("pushing to an index URL needs twine: pip install twine")
            raise HubUnreachableError(f"twine could not upload to {self.upload_url}:\n{out}")
        name, version, _, _ = parse_wheel_filename(os.path.basename(wheel))
        project = project or canonicalize_name(name)
        url = urllib.parse.urljoin(self.location, f"{project}/{os.path.basename(wheel)}")
        return DistFile(project, version, os.path.basename(wheel), url, sha256_file(wheel))


def fetch(file: DistFile, cache_dir: str) -> str:
    """A local copy of ``file`` whose sha256 is checked against the index's: the file itself
    for a folder hub, else a download kept in ``cache_dir/wheels/<sha256>/``."""
    if file.url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(file.url).path)
        _check_hash(path, file)
        return path
    if file.sha256:
        cached = os.path.join(cache_dir, "wheels", file.sha256, file.filename)
        if os.path.exists(cached):
            return cached
    folder = os.path.join(cache_dir, "wheels", ".download")
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".whl")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(file.url, timeout=HTTP_TIMEOUT) as answer:
                    shutil.copyfileobj(answer, out)
            except (urllib.error.URLError, OSError) as exc:
                raise HubUnreachableError(f"cannot download {file.url}: {exc}") from None
        _check_hash(tmp, file)
        sha = sha256_file(tmp)
        target_dir = os.path.join(cache_dir, "wheels", sha)
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, file.filename)
        os.replace(tmp, target)
        return target
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def remember(path: str, file: DistFile, cache_dir: str) -> None:
    """Keep a copy of a folder hub's wheel in the cache too: resolvable when the hub is gone."""
    sha = file.sha256 or sha256_file(path)
    target = os.path.join(cache_dir, "wheels", sha, file.filename)
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target + ".part")
        os.replace(target + ".part", target)


def cached_files(project: str, cache_dir: str) -> list[DistFile]:
    """The wheels of ``project`` the cache holds (what resolves while the hub is unreachable)."""
    root = os.path.join(cache_dir, "wheels")
    found = []
    with contextlib.suppress(FileNotFoundError):
        for sha in os.listdir(root):
            folder = os.path.join(root, sha)
            if sha.startswith(".") or not os.path.isdir(folder):
                continue
            for filename in os.listdir(folder):
                f = _dist_file(project, "file://" + urllib.parse.quote(folder) + "/", filename)
                if f is not None:
                    found.append(DistFile(f.project, f.version, f.filename, f.url, sha))
    return sorted(found, key=lambda f: f.version)


def _check_hash(path: str, file: DistFile) -> None:
    if not os.path.exists(path):
        raise HubUnreachableError(f"{file.filename} is listed by the hub but missing at {path}")
    if file.sha256 is None:
        return
    actual = sha256_file(path)
    if actual != file.sha256:
        raise HashMismatchError(
            f"{file.filename}: sha256 {actual} does not match the {file.sha256} the index (or "
            "lock file) records; the file was changed or corrupted: push it again as a new "
            "version, or re-lock with `meshflow hub lock` if the change is expected"
        )
