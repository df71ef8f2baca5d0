"""Shared fixtures: every test runs offline on CPU with its own data directory."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test reads the developer's own DFF_* settings or data directory."""
    for key in list(os.environ):
        if key.startswith("DFF_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _realtime_threads() -> list[int]:
    """This process's threads that run under a real-time policy (SCHED_FIFO/SCHED_RR)."""
    found = []
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(tid)) in (os.SCHED_FIFO, os.SCHED_RR):
                found.append(int(tid))
        except OSError:  # the thread ended meanwhile
            continue
    return found


@pytest.fixture(autouse=True)
def _no_realtime_scheduling(request):
    """Fail the test after which this process runs real-time (SCHED_FIFO), and put it back to normal.

    Why: on the development VM a test run once came out SCHED_FIFO at priority 99; every process it
    started then inherited that (PostgreSQL, Ray, Chromium), and two Chromium zygotes spinning at RT
    priority starved the kernel work they waited on: nothing could be killed until the policy was reset.
    """
    yield
    if not hasattr(os, "sched_getscheduler") or not os.path.isdir("/proc/self/task"):
        return
    realtime = _realtime_threads()
    if not realtime:
        return
    for tid in realtime:
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            continue
    pytest.fail(f"{request.node.nodeid} left {len(realtime)} thread(s) of the test process SCHED_FIFO/RR")
