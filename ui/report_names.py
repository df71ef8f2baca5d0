"""Which files ``dff scan`` analyses and what their reports are called: one rule for the in-process scan
(ui/cmd_analyze.py) and ``dff scan --ray`` (ui/cmd_scan_ray.py).

- ``report_stems``: every input of one run gets its own legal name;
- ``ReportIndex`` + ``report_stem``: a report never replaces an earlier run's report of other bytes;
- ``report_note``: where a verdict line says its reports went.

Pure apart from reading the ``--json`` directory; nothing here writes a file, and nothing imports
``pipeline`` (which inputs a folder stands for is ``cmd_analyze.input_files``: it asks pipeline.train).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from stream import protocol as p

NAME_MAX_BYTES = 255  # a file name's limit on Linux/macOS file systems (ext4, XFS, APFS, tmpfs), in bytes
REPORT_SUFFIXES = (".json", ".csv")
STEM_MAX_BYTES = NAME_MAX_BYTES - max(len(s) for s in REPORT_SUFFIXES)
HASH_CHARS = 8

REPORT_NAME_RULE = (
    "Reports are named after each input's file name: DIR/<name>.json and DIR/<name>.csv. When that name "
    "would pass the file system's 255-byte limit, or when two inputs of this run share a file name (a/1.jpg, "
    "b/1.jpg), <name> becomes the name cut to fit (on a character boundary) plus '-' and the first 8 hex "
    "digits of the SHA-256 of the input's absolute path. A report never replaces another file's: not one of "
    "this run, and not one of an earlier run, whose --json DIR/<name>.json holds the SHA-256 of other bytes "
    "(the new report then takes the hashed name, or should that hold other bytes too, the hash of the path "
    "plus '#2', '#3', ...; with --csv alone, an earlier run's CSV of the same name is replaced). Each verdict "
    "line ends with where its reports went ('  -> out/1.jpg-3fa2b1c0.json, out/1.jpg-3fa2b1c0.csv')."
)


def fit(name: str, max_bytes: int) -> str:
    """``name`` cut to at most ``max_bytes`` bytes of its file-system encoding, never inside a character."""
    out, used = [], 0
    for ch in name:
        n = len(os.fsencode(ch))
        if used + n > max_bytes:
            break
        out.append(ch)
        used += n
    return "".join(out)


def _hashed(name: str, key: bytes, chars: int) -> str:
    tag = "-" + hashlib.sha256(key).hexdigest()[:chars]
    return fit(name or "input", STEM_MAX_BYTES - len(tag)) + tag


def report_stems(paths: Sequence[Path]) -> list[str]:
    """The report file name (without ``.json``/``.csv``) of each input, following ``REPORT_NAME_RULE``:
    legal (at most 250 bytes, so ``.json`` still fits in 255) and different for different inputs.

    Pure apart from ``Path.absolute`` (no file is touched). The same input given twice gets the same stem."""
    full = [os.fsencode(p.absolute()) for p in paths]
    names = [p.name or "input" for p in paths]
    sharing: dict[str, set[bytes]] = {}
    for name, key in zip(names, full, strict=True):
        sharing.setdefault(name.casefold(), set()).add(key)  # casefold: a case-insensitive disk would clash

    stems: list[str] = []
    owner: dict[str, bytes] = {}
    for name, key in zip(names, full, strict=True):
        fits = len(os.fsencode(name)) <= STEM_MAX_BYTES
        stem = name if fits and len(sharing[name.casefold()]) == 1 else _hashed(name, key, HASH_CHARS)
        chars = HASH_CHARS
        while owner.setdefault(stem.casefold(), key) != key:  # a plain name that equals another's hashed one
            chars += 8
            stem = _hashed(name, key, chars)
        stems.append(stem)
    return stems


def path_stem(path: Path) -> str:
    """The report name ``REPORT_NAME_RULE`` gives an input that shares its name: the name cut to fit, '-',
    8 hex digits of the SHA-256 of its absolute path."""
    return _hashed(path.name, os.fsencode(path.absolute()), HASH_CHARS)


def fallback_stems(path: Path) -> Iterator[str]:
    """The names ``path``'s report takes, in turn, when its own holds an earlier run's report of other bytes:
    ``path_stem``, then the hash of the absolute path plus ``#2``, ``#3``, ... (endless, each legal)."""
    yield path_stem(path)
    key = os.fsencode(path.absolute())
    for n in itertools.count(2):
        yield _hashed(path.name, key + b"#%d" % n, HASH_CHARS)


def analysis_key(policy: p.Policy, strategy: str) -> str:
    """What, beside the bytes and the model, makes two reports of a file the same: the sampling policy and
    the strategy. A rerun with other sampling flags analyses again."""
    return json.dumps([policy.to_json(), strategy], sort_keys=True)


class ReportIndex:
    """The reports in a --json directory, read once: which (media SHA-256, model SHA-256, ``analysis_key``)
    triples have a complete one, and which file each report name is about (kept up to date by ``add`` as a scan writes).
    A report with ``incomplete`` set is no pair (its file is analysed again); a ``*.json`` that is no report
    of ours is ignored and counted in ``unreadable``. Names are compared casefolded: on a case-insensitive
    disk ``Face.jpg.json`` and ``face.jpg.json`` are one file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.unreadable = 0
        self._pairs: dict[tuple[str, str, str], Path] = {}
        self._media: dict[str, str] = {}  # casefolded report file name -> media SHA-256
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.json")):
            try:  # the head only: building whole Reports for thousands of files would cost more
                head = p.decode_report_head(json.loads(path.read_bytes()))
            except (OSError, ValueError):  # ProtocolError is a ValueError
                self.unreadable += 1
                continue
            self._media[path.name.casefold()] = head.media_sha256
            if head.incomplete is None:
                key = (head.media_sha256, head.model_sha256, analysis_key(head.policy, head.strategy))
                self._pairs.setdefault(key, path)

    def __len__(self) -> int:
        return len(self._media)

    def find(self, media_sha256: str, model_sha256: str, analysis: str) -> Path | None:
        """The complete report of this file with this model and ``analysis_key``, or None."""
        return self._pairs.get((media_sha256, model_sha256, analysis))

    def media_of(self, file_name: str) -> str | None:
        """The media SHA-256 the report named ``file_name`` (e.g. ``clip.mp4.json``) is about, or None."""
        return self._media.get(file_name.casefold())

    def add(self, file_name: str, media_sha256: str | None) -> None:
        """The report named ``file_name`` now holds ``media_sha256`` (None: its bytes are not known)."""
        self._media[file_name.casefold()] = "" if media_sha256 is None else media_sha256


def report_stem(path: Path, stem: str, media_sha256: str | None, index: ReportIndex | None) -> str:
    """``stem`` (``report_stems``' name in this run) unless DIR/<stem>.json holds the report of other bytes
    (an earlier run's, or one this run wrote): then the first of ``fallback_stems`` that is free or holds
    these bytes, so no report is lost (the report of the same bytes, from an older model or incomplete, is
    replaced). ``index`` None (no --json): ``stem``. ``media_sha256`` None matches only a free name."""
    if index is None:
        return stem
    for candidate in itertools.chain([stem], fallback_stems(path)):
        other = index.media_of(f"{candidate}.json")
        if other is None or (media_sha256 is not None and other == media_sha256):
            return candidate
    raise AssertionError("unreachable: fallback_stems is endless and the index finite")


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when that is shorter, else absolute."""
    full = os.path.abspath(path)
    try:
        relative = os.path.relpath(full)
    except ValueError:  # another drive (Windows): no relative path exists
        return full
    return relative if len(relative) < len(full) else full


def report_note(written: Sequence[Path]) -> str:
    """What a verdict line ends with: ``'  -> out/a.jpg.json, out/a.jpg.csv'``; '' when nothing was written."""
    return "  -> " + ", ".join(shown_path(p) for p in written) if written else ""
