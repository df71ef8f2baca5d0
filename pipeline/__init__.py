"""All compute of DeepFake Forensics: sample → detect → classify + Grad-CAM → track → aggregate.

Runs with no network and imports neither websockets nor gradio. Nothing heavy happens at import.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("deepfake-forensics")
except metadata.PackageNotFoundError:  # running from a tree that was never pip-installed
    __version__ = "0+unknown"
