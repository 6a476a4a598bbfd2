"""``models fetch``: download a catalog entry's files, check them, install them atomically.

Every file goes to a temp file in the entry's own folder (so the final rename stays on one
filesystem), its size and sha256 are checked against the catalog, and only when every file
of the entry is right are they renamed into place, the model file last. A failed, cut or
interrupted download deletes its temp files and leaves the folder as it was: an installed
model stays installed, a first install leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import yaml

from agent import __version__
from agent.detect.catalog import CARD_FILE, MODEL_FILE, CatalogEntry, FileSpec
from agent.detect.model_store import Copy, verify_copy
from agent.errors import ConfigError, UserError
from agent.fsutil import create_temp, fsync_dir

MIRROR_ENV = "EDGE_AGENT_MODELS_MIRROR"
DEFAULT_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 16
_TEMP_NAME = re.compile(r"^\..+\.(\d+)-\d+\.tmp$")  # agent.fsutil.create_temp's names

Progress = Callable[[str, int, int], None]
"""Called as ``progress(file name, bytes so far, bytes expected)`` while a file downloads."""


class DownloadError(UserError):
    """A file could not be downloaded, or was not the pinned file (exit code 1)."""


@dataclass
class FetchResult:
    """What ``fetch_entry`` did: the entry's folder, the files it wrote (empty when the installed
    copy was already right), and whether it replaced a damaged copy."""

    folder: Path
    written: list[str]
    repaired: bool = False


def check_license(entry: CatalogEntry, accepted: bool) -> None:
    """``ConfigError`` (exit 2) unless the license is permissive or the user accepted it."""
    if entry.permissive or accepted:
        return
    raise ConfigError(
        f"{entry.name} is licensed under {entry.license} ({entry.license_url}), not Apache-2.0 or MIT: "
        f"read the license, then accept it with: {entry.fetch_command()}"
    )


def mirror_base(value: str) -> str:
    """A mirror given as a URL, or as a local folder (made a ``file:`` URL)."""
    if urlsplit(value).scheme in ("http", "https", "file"):
        return value.rstrip("/")
    return Path(value).expanduser().resolve().as_uri()


def file_url(entry: CatalogEntry, file_name: str, mirror: str | None) -> str:
    """Where to fetch ``file_name`` of ``entry``: ``MIRROR/<name>/<file name>`` when a mirror is
    given (files shipped in the package are always copied from the package)."""
    spec = entry.files[file_name]
    if mirror is None or spec.packaged is not None:
        return spec.url
    return f"{mirror_base(mirror)}/{entry.name}/{file_name}"


def _why(reason: object, timeout_s: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed ({reason.reason or reason})"
    if isinstance(reason, FileNotFoundError):
        return "no such file"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _open(url: str, spec: FileSpec, timeout_s: float) -> IO[bytes]:
    if spec.packaged is not None and url == spec.url:
        try:
            return spec.packaged.open("rb")
        except OSError as exc:
            raise DownloadError(
                f"the package's {spec.packaged} cannot be read: {_why(exc, timeout_s)}"
            ) from None
    request = urllib.request.Request(url, headers={"User-Agent": f"edge-agent/{__version__}"})
    try:
        response: IO[bytes] = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot fetch {url}: {_why(exc.reason, timeout_s)}") from None
    except (OSError, http.client.HTTPException) as exc:  # e.g. a timeout waiting for the headers
        raise DownloadError(f"cannot fetch {url}: {_why(exc, timeout_s)}") from None
    return response


def _copy(
    url: str, spec: FileSpec, out: IO[bytes], timeout_s: float, progress: Callable[[int], None]
) -> tuple[int, str]:
    """Stream ``url`` into ``out``; returns (bytes, sha256). Never reads past the pinned size."""
    digest = hashlib.sha256()
    received = 0
    with _open(url, spec, timeout_s) as stream:
        try:
            while chunk := stream.read(min(CHUNK_BYTES, spec.size + 1 - received)):
                received += len(chunk)
                if received > spec.size:
                    raise DownloadError(
                        f"{url} sends more than the pinned {spec.size} bytes: not the pinned file"
                    )
                digest.update(chunk)
                out.write(chunk)
                progress(received)
        except TimeoutError:
            raise DownloadError(
                f"{url} sent nothing for {timeout_s:g} s (after {received} of {spec.size} bytes)"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"the download of {url} broke off after {received} of {spec.size} bytes: {_why(exc, timeout_s)}"
            ) from None
    return received, digest.hexdigest()


@contextlib.contextmanager
def _temp_beside(target: Path) -> Iterator[tuple[IO[bytes], str]]:
    """A temp file beside ``target`` open for writing, flushed to the device when the block ends;
    deleted when the block raises."""
    fd, tmp = create_temp(target)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, tmp
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def download(url: str, target: Path, spec: FileSpec, *, timeout_s: float, progress: Progress) -> str:
    """Download ``url`` to a temp file beside ``target`` and check it against ``spec``; returns
    the temp file's path (the caller renames it). Nothing is left behind on failure."""
    with _temp_beside(target) as (out, tmp):
        received, sha256 = _copy(url, spec, out, timeout_s, lambda n: progress(target.name, n, spec.size))
        if received < spec.size:
            raise DownloadError(
                f"the download of {url} stopped after {received} of {spec.size} bytes "
                "(the connection was closed)"
            )
        if sha256 != spec.sha256:
            raise DownloadError(
                f"{url} gave a file whose sha256 is {sha256}, not the pinned {spec.sha256} "
                "(a damaged download, or the file changed upstream)"
            )
    return tmp


def _write_card(folder: Path, entry: CatalogEntry) -> str | None:
    """The catalog's card for ``entry`` in a temp file beside its ``model.yaml`` (None when the
    entry ships its own model.yaml)."""
    card = entry.card_to_write()
    if card is None:
        return None
    text = f"# written by `edge-agent models fetch {entry.name}` from the model catalog\n"
    text += yaml.safe_dump(card.model_dump(exclude_none=True), sort_keys=False, allow_unicode=True)
    with _temp_beside(folder / CARD_FILE) as (out, tmp):
        out.write(text.encode("utf-8"))
    return tmp


def remove_stale_temps(folder: Path) -> None:
    """Delete temp files that interrupted fetches of processes no longer running left behind."""
    for path in folder.glob(".*.tmp"):
        match = _TEMP_NAME.match(path.name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        except PermissionError:  # alive, another user's
            pass


def _make_folder(folder: Path) -> bool:
    """Create the entry's folder; True when it did not exist before."""
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create {folder}: {exc.strerror}; run as a user who may write there (the service's "
            "models: root or edge-agent), or choose another folder with --dir"
        ) from None
    if not os.access(folder, os.W_OK):
        raise UserError(
            f"cannot write in {folder}: permission denied; run as its owner (sudo -u edge-agent ... for the "
            "service's models) or choose another folder with --dir"
        )
    return not existed


def _stage(
    entry: CatalogEntry,
    folder: Path,
    staged: dict[str, str],
    mirror: str | None,
    timeout_s: float,
    progress: Progress,
) -> None:
    """Download every file of ``entry`` and write its card into temp files in ``folder``, noting
    each in ``staged`` (final name -> temp path) as soon as it exists."""
    for file_name, spec in entry.files.items():
        url = file_url(entry, file_name, mirror)
        staged[file_name] = download(url, folder / file_name, spec, timeout_s=timeout_s, progress=progress)
    card_tmp = _write_card(folder, entry)
    if card_tmp is not None:
        staged[CARD_FILE] = card_tmp


def fetch_entry(
    entry: CatalogEntry,
    root: Path,
    *,
    mirror: str | None = None,
    force: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Progress | None = None,
) -> FetchResult:
    """Install ``entry`` into ``root/<name>``: nothing to do when a verified copy is there (unless
    ``force``); otherwise download every file, check it, and rename all into place together."""
    folder = root / entry.name
    problems = (
        verify_copy(Copy(entry, folder), load=False).problems if (folder / MODEL_FILE).is_file() else None
    )
    if problems == [] and not force:
        return FetchResult(folder, [])
    created = _make_folder(folder)
    remove_stale_temps(folder)
    staged: dict[str, str] = {}
    try:
        _stage(entry, folder, staged, mirror, timeout_s, progress or _quiet)
        for file_name in sorted(staged, key=lambda name: name == MODEL_FILE):  # the model last
            os.replace(staged.pop(file_name), folder / file_name)
        fsync_dir(folder)
    except BaseException as exc:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, DownloadError):
            kept = "nothing was installed" if created else f"{folder} is unchanged"
            raise DownloadError(f"fetch {entry.name}: {exc}; {kept} (try again, or use --mirror)") from None
        raise
    return FetchResult(folder, [*entry.files, *([CARD_FILE] if entry.card else [])], bool(problems))


def _quiet(*_args: Any) -> None:
    return None
