"""The page's download folders: made at the first download, the newest KEEP_DOWNLOADS kept."""

from __future__ import annotations

import os
import time

from ui import live


def test_a_long_running_page_keeps_only_the_newest_download_folders() -> None:
    n = live.KEEP_DOWNLOADS + 6
    made = []
    for i in range(n):
        folder = live._download_folder(f"job{i:03d}")
        os.utime(folder, (time.time() - n + i, time.time() - n + i))  # distinct ages, oldest first
        made.append(folder)
    again = live._download_folder("job000")  # the oldest, fetched again, becomes the newest
    (again / "r.json").write_text("{}")
    left = {f.name for f in made[0].parent.iterdir()}
    assert len(left) == live.KEEP_DOWNLOADS
    assert "job000" in left and (again / "r.json").is_file()
    assert {f"job{i:03d}" for i in range(1, 7)}.isdisjoint(left)  # the six oldest others are gone
    assert "job007" in left
    assert f"job{n - 1:03d}" in left
