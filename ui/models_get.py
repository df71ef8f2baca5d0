"""``dff models get``'s network half: fetch one pinned file over HTTP(S) and install it, or nothing.

The rules, each to keep a wrong or partial file out of the models directory (where the service would
load the newest file it finds):

- streamed in chunks into a temporary ``.<name>.<random>.part`` beside the destination (not a checkpoint
  suffix, so never picked up), never reading more than the pinned size plus one byte;
- bounded in time: ``timeout_s`` for the connection and for each read, ``deadline_s`` for the whole file;
- verified (size, then SHA-256) before ``os.replace`` moves it into place atomically; on any failure,
  Ctrl-C included, the temporary file is removed and nothing is installed;
- an existing file with the destination's name is never replaced: the identical file is "already
  installed", a different one is refused.

Proxies come from the environment (urllib's default), except for a loopback URL, which never goes through
one. Every failure is a DownloadError with a one-line message. No project imports: the caller
(ui/cmd_models.py) takes the pin from pipeline/detectors/catalog.py.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

CHUNK_BYTES = 64 * 1024
TIMEOUT_S = 30.0  # connecting, and waiting for each chunk
DEADLINE_S = 300.0  # the whole file
USER_AGENT = "dff-models-get (DeepFake Forensics)"


class DownloadError(Exception):
    """Nothing was installed; the message (one line) says why."""


@dataclass(frozen=True)
class Pin:
    """What to fetch and exactly which bytes it must be."""

    url: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Installed:
    """``path`` now holds the pinned bytes; ``already``: it did before, nothing was downloaded."""

    path: Path
    sha256: str
    already: bool


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _opener(url: str) -> urllib.request.OpenerDirector:
    # ProxyHandler({}): a proxy set in the environment must not see (or break) a loopback fetch.
    if is_loopback_url(url):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(pin: Pin, sink: BinaryIO, timeout_s: float, deadline_s: float) -> str:
    """Stream ``pin.url`` into ``sink``; the SHA-256 of what came, once size and hash match the pin."""
    request = urllib.request.Request(pin.url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    digest = hashlib.sha256()
    n_bytes = 0
    started = time.monotonic()
    try:
        with _opener(pin.url).open(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > pin.size_bytes:
                raise DownloadError(
                    f"{pin.url}: the server announces {int(length)} bytes, the pinned file has {pin.size_bytes}; "
                    "not downloading"
                )
            while True:
                # read1: returns what one socket read gives, so the deadline is checked while bytes trickle
                chunk = response.read1(min(CHUNK_BYTES, pin.size_bytes + 1 - n_bytes))
                if not chunk:
                    break
                n_bytes += len(chunk)
                if n_bytes > pin.size_bytes:
                    raise DownloadError(
                        f"{pin.url}: the server sent more than the pinned {pin.size_bytes} bytes; stopped reading"
                    )
                digest.update(chunk)
                sink.write(chunk)
                if time.monotonic() - started > deadline_s:
                    raise DownloadError(f"{pin.url}: not complete after {deadline_s:g} s ({n_bytes} bytes); gave up")
    except HTTPError as err:
        raise DownloadError(f"{pin.url}: HTTP {err.code} {err.reason}") from None
    except URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise DownloadError(f"{pin.url}: no answer within {timeout_s:g} s") from None
        raise DownloadError(f"{pin.url}: cannot connect: {err.reason}") from None
    except TimeoutError:
        if n_bytes == 0:
            raise DownloadError(f"{pin.url}: no answer within {timeout_s:g} s") from None
        raise DownloadError(f"{pin.url}: no data for {timeout_s:g} s after {n_bytes} bytes") from None
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(f"{pin.url}: download failed after {n_bytes} bytes: {type(err).__name__}: {err}") from None
    if n_bytes != pin.size_bytes:
        raise DownloadError(f"{pin.url}: got {n_bytes} bytes, the pinned file has {pin.size_bytes}")
    sha256 = digest.hexdigest()
    if sha256 != pin.sha256:
        raise DownloadError(f"{pin.url}: SHA-256 mismatch (got {sha256}, pinned {pin.sha256})")
    return sha256


def _check_existing(pin: Pin, dest: Path) -> Installed | None:
    """The identical file already at ``dest`` (Installed, already), nothing there (None), else refuse."""
    if not dest.exists():
        return None
    if not dest.is_file():
        raise DownloadError(f"{dest} exists and is not a file; nothing installed")
    sha256 = file_sha256(dest)
    if sha256 == pin.sha256:
        return Installed(dest, sha256, already=True)
    raise DownloadError(
        f"{dest} exists with other contents (sha256 {sha256[:16]}…, the pinned file's is {pin.sha256[:16]}…); "
        "not replacing it: move it away, or pass --dir DIR to install elsewhere"
    )


def install(pin: Pin, dest: Path, *, timeout_s: float = TIMEOUT_S, deadline_s: float = DEADLINE_S) -> Installed:
    """Make ``dest`` hold the pinned file (module docstring for the rules). DownloadError otherwise."""
    dest = Path(dest)
    found = _check_existing(pin, dest)
    if found is not None:
        return found
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as err:
        raise DownloadError(f"cannot write into {dest.parent}: {err}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as sink:
            os.chmod(sink.fileno(), 0o644)  # mkstemp makes it 0600; the service may run as another user
            sha256 = _fetch(pin, sink, timeout_s, deadline_s)
        if _check_existing(pin, dest) is not None:  # the same file landed meanwhile (another `get`)
            return Installed(dest, sha256, already=True)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return Installed(dest, sha256, already=False)


def write_json(path: Path, document: dict[str, Any]) -> Path:
    """Write ``document`` as indented JSON at ``path`` atomically (a temporary file, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
