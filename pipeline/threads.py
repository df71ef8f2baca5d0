"""CPU thread settings for a process that runs the models, chosen once at the entry point (``ui/cli.py``
``main``, ``python -m bench``) before anything imports torch: OpenMP reads its variables when torch loads,
so this module imports no torch itself.

The rule: ``OMP_WAIT_POLICY=PASSIVE`` unless the user set ``OMP_WAIT_POLICY`` (any value, even empty,
wins); the torch thread count stays torch's default (one per core) unless ``DFF_TORCH_THREADS`` or
``--threads`` says otherwise.

Why: torch's OpenMP (libgomp) threads *spin* after every parallel region, waiting for the next one. On a
CPU shared with other busy processes a spinning thread burns the time slice its sibling needs, and each
parallel region then waits for its slowest, descheduled thread: the pipeline collapses. Measured with
``python -m bench.contention --matrix`` (720p clip, every frame, fresh process, 2 vCPUs, 2
``while True: pass`` processes beside it; medians of 3 and 2 rounds on a machine other jobs shared, so the
quiet numbers are noisy; bench/results/2026-12-01-vm-contention*.json), ms/frame quiet -> beside 2 busy:

    torch threads, wait policy   run 1              run 2
    2 (default), spin            182 -> 5426 (0.03)  225 -> 1989 (0.11)
    1, spin                      547 -> 2033 (0.27)  -
    2 (default), PASSIVE         334 ->  583 (0.57)  216 ->  502 (0.43)
    1, PASSIVE                   323 ->  929 (0.35)  241 ->  502 (0.48)

Through the service (``python -m bench.load``, 1 sample/s, 3 rounds): PASSIVE with 2 threads, ratio 0.51
(4.47 -> 2.27 frames/s, bench/results/2026-12-01-vm-load.json). An earlier run of the same bench, whose
results file was not kept, gave 0.48 with 2 threads and 0.51 with 1 thread (3.6 frames/s solo, 30% less
than 2 threads when quiet). So one thread buys no speed under contention and costs it when quiet: the
thread count stays. On 2 cores beside 2 spinning
processes a process using both cores gets about half the CPU it had, so ~0.5 is the ceiling there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

ENTRY_THREAD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


def entry_thread_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the entry point adds to ``environ`` (pure): those of ENTRY_THREAD_ENVIRONMENT that
    are not set there already (an empty value counts as set: the user's choice)."""
    return {k: v for k, v in ENTRY_THREAD_ENVIRONMENT.items() if k not in environ}


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
