"""What the web page knows about its server, as plain values: option defaults, limits, who may manage
models, the bundled examples. Built by the composition root (``ui/cmd_serve.py``) from the server's Settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class UiConfig:
    """What the page needs to know about its server: option defaults, limits, and who may manage models.

    Built by the composition root (``ui/cmd_serve.py``) from the server's Settings; plain values only.
    """

    sample_mode: str = "every_s"
    every_s: float = 1.0
    sample_count: int = 16
    max_frames: int | None = 300
    strategy: str = "per_person"
    threshold: float | None = None  # the server's DFF_THRESHOLD; None = model card's, else 0.5
    band: float = 0.05
    max_upload_bytes: int = 500 * 1024 * 1024
    token_required: bool = False
    host: str = "127.0.0.1"
    host_is_loopback: bool = True
    examples: tuple[Path, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any, *, host_is_loopback: bool, examples: Sequence[Path] = ()) -> UiConfig:
        """From ``pipeline.config.Settings`` (read by attribute, so this module needs no pipeline import)."""
        return cls(
            sample_mode=str(getattr(settings.sample_mode, "value", settings.sample_mode)),
            every_s=settings.every_s,
            sample_count=settings.sample_count,
            max_frames=settings.max_frames,
            strategy=str(getattr(settings.strategy, "value", settings.strategy)),
            threshold=settings.threshold,
            band=settings.inconclusive_band,
            max_upload_bytes=int(settings.max_upload_mb * 1024 * 1024),
            token_required=bool(settings.token),
            host=settings.host,
            host_is_loopback=host_is_loopback,
            examples=tuple(examples),
        )

    def admin_note(self) -> str:
        """Who may install and activate models on this server (mirrors stream/auth.py's rule)."""
        if self.token_required:
            return (
                "This server requires its access token (DFF_TOKEN) for analysis, reports and model changes: "
                "enter it in the Access token box at the top of the page."
            )
        if self.host_is_loopback:
            return (
                f"This server has no access token and listens only on this machine ({self.host}), so model "
                "upload and activation are allowed from this page. To manage models remotely, start it with DFF_TOKEN."
            )
        return (
            f"Model upload and activation are disabled: the server listens on {self.host} without an access "
            "token. Restart it with DFF_TOKEN set to manage models from this page."
        )
