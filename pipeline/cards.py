"""The models directory as the service and ``dff models`` see it: each checkpoint file with the model card
``<checkpoint>.card.json`` beside it, and whether that card still describes the file.

Reading and listing only, with no training code, so stream/ can list models without importing
``pipeline.train``; writing and updating cards is ``pipeline.train.card``'s job (it reads through here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.models import CHECKPOINT_SUFFIXES, file_sha256, read_card  # read_card: re-exported


@dataclass(frozen=True)
class ModelEntry:
    """A checkpoint in the models directory and what its card says (``card`` None: no card)."""

    path: Path
    size_bytes: int
    modified: str
    card: dict[str, Any] | None
    card_matches: bool  # the card's sha256 is this file's
    card_error: str | None = None
    sha256: str = ""  # of the weights file

    def card_facts(self) -> dict[str, Any] | None:
        """What a model list shows of a card that describes this file: name, metrics line, calibration
        (None without a matching card)."""
        if self.card is None or not self.card_matches:
            return None
        calibration = self.card.get("calibration") or {}
        return {
            "name": self.card.get("name"),
            "summary": self.card.get("summary"),
            "temperature": calibration.get("temperature"),
            "threshold": calibration.get("threshold"),
        }

    @property
    def card_status(self) -> str:
        """The card's state: "ok", "stale" (written for other weights), "unreadable" or "none"."""
        if self.card_error:
            return "unreadable"
        if self.card is None:
            return "none"
        return "ok" if self.card_matches else "stale"


def list_models(models_dir: Path) -> list[ModelEntry]:
    """Every ``*.pth``/``*.pt``/``*.h5`` in ``models_dir``, newest first (the one the service picks by default),
    with its card. Hashes each file to check the card still describes it."""
    models_dir = Path(models_dir).expanduser()
    if not models_dir.is_dir():
        return []
    paths = [p for p in models_dir.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES]
    entries = []
    for path in sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        stat = path.stat()
        card, error = None, None
        try:
            card = read_card(path)
        except ValueError as err:
            error = str(err)
        sha = file_sha256(path)
        matches = card is not None and card.get("sha256") == sha
        modified = time.strftime("%Y-%m-%d %H:%M", time.localtime(stat.st_mtime))
        entries.append(ModelEntry(path, stat.st_size, modified, card, matches, error, sha))
    return entries
