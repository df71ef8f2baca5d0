"""The page's download folders: made at the first download, the newest KEEP_DOWNLOADS kept."""

from __future__ import annotations

import os
import tempfile
import time

from ui import live


def test_a_long_running_page_keeps_only_the_newest_download_folders(monkeypatch) -> None:
    root = tempfile.TemporaryDirectory(prefix="dff-ui-test-")  # not the process's own, which other tests fill
    monkeypatch.setattr(live, "_downloads", root)
    n = live.KEEP_DOWNLOADS + 6
    for i in range(n):
        folder = live._download_folder(f"job{i:03d}")
        os.utime(folder, (time.time() - n + i, time.time() - n + i))  # distinct ages, oldest first
    again = live._download_folder("job000")  # the oldest (already removed), fetched again: the newest
    (again / "r.json").write_text("{}")
    left = {f.name for f in again.parent.iterdir()}
    assert len(left) == live.KEEP_DOWNLOADS
    assert "job000" in left and (again / "r.json").is_file()
    assert {f"job{i:03d}" for i in range(1, 7)}.isdisjoint(left)  # the six oldest others are gone
    assert {"job007", f"job{n - 1:03d}"} <= left
    root.cleanup()


def test_the_download_folder_is_not_made_at_import() -> None:
    import subprocess
    import sys

    code = "import ui.live as l; print(l._downloads is None)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )
