"""The thread settings the entry point chooses (pipeline/threads.py): the user's values always win, and
they are in place before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.threads import apply_entry_thread_environment, entry_thread_environment


@pytest.mark.parametrize(
    ("environ", "added"),
    [
        ({}, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {}),  # the user's value wins
        ({"OMP_WAIT_POLICY": ""}, {}),  # set, even empty: the user's choice
        ({"DFF_TORCH_THREADS": "1"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ],
)
def test_entry_environment_adds_only_what_the_user_did_not_set(environ, added) -> None:
    assert entry_thread_environment(environ) == added


def test_nothing_changes_once_torch_is_loaded() -> None:
    import torch  # noqa: F401  (this test process has it; OpenMP has read its variables already)

    env: dict[str, str] = {}
    assert apply_entry_thread_environment(env) == {} and env == {}


_PROBE = """
import json, os, sys
from ui.cli import main
try:
    main(["models", "--dir", sys.argv[1]])  # any command: the settings are applied before parsing
except SystemExit:
    pass
from pipeline.config import Settings
print(json.dumps({"omp": os.environ.get("OMP_WAIT_POLICY"), "threads": Settings.from_env().torch_threads}))
"""


def _probe(tmp_path, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "DFF_TORCH_THREADS")}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)], env={**base, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_dff_entry_point_sets_them_before_torch_loads_and_keeps_the_users(tmp_path) -> None:
    # `dff models` imports torch; the variables are there, so they were set before (after, nothing is set)
    assert _probe(tmp_path) == {"omp": "PASSIVE", "threads": 0}  # 0: torch's default thread count
    got = _probe(tmp_path, OMP_WAIT_POLICY="ACTIVE", DFF_TORCH_THREADS="0")
    assert got["omp"] == "ACTIVE" and got["threads"] == 0
