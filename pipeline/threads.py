"""CPU thread settings for a process that runs the models, chosen once at the entry point (``ui/cli.py``)
before anything imports torch. Imports no torch itself: OpenMP reads its variables when torch loads.

Why (measured with ``python -m bench.contention --matrix``, 2 vCPUs; figures in bench/results):

- torch's OpenMP (libgomp) threads **spin** at the end of every parallel region, waiting for the next
  one, unless ``OMP_WAIT_POLICY=PASSIVE``. Beside other busy processes a spinning thread burns the
  time slices its sibling threads need, and each parallel region waits for the slowest (descheduled)
  thread: the analysis collapsed to a fraction of its quiet speed.
- With one thread per two cores a parallel region no longer needs every core of the machine, so a few
  busy neighbours slow it down by their share of the CPU instead of stalling each region; on an idle
  machine it costs part of the speed of all cores (see the module's figures below).

The rule (each only when the user has not set the variable: an explicit value always wins):

- ``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep instead of spinning;
- ``DFF_TORCH_THREADS`` = half the CPUs this process may run on (at least 1): Settings.torch_threads,
  applied by ``Engine.open`` (and by ``dff train``/``dff eval``; ``--threads`` overrides it there).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset`` or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def entry_thread_environment(environ: Mapping[str, str], cpus: int | None = None) -> dict[str, str]:
    """The variables the entry point adds to ``environ`` (pure): only those not already set (an empty
    value counts as set); ``cpus`` defaults to :func:`usable_cpus`."""
    n = usable_cpus() if cpus is None else cpus
    wanted = {"OMP_WAIT_POLICY": "PASSIVE", "DFF_TORCH_THREADS": str(max(1, n // 2))}
    return {k: v for k, v in wanted.items() if k not in environ}


def apply_entry_thread_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add :func:`entry_thread_environment` to ``environ`` (default ``os.environ``, so child processes
    inherit it too) and return what was added. Does nothing once torch is imported in this process
    (OpenMP has read its settings by then, and a caller such as a test process keeps its own)."""
    if "torch" in sys.modules:
        return {}
    env = os.environ if environ is None else environ
    added = entry_thread_environment(env)
    env.update(added)
    return added
