"""Named kill points, for fault-injection tests of resume (a real ``kill -9`` of the running process).

``ROBUST_AL_KILL_AT=NAME[@ITERATION][:N]`` makes the process SIGKILL itself the N-th time (default 1) it
passes the point NAME (in iteration ITERATION, if given). Unset, a point costs one dictionary lookup.
The points are where a crash could leave a half-done step: after a batch is stored, after an answer is
stored, between augmentation writes, mid trust update, mid training, before and after a checkpoint.
"""
from __future__ import annotations

import os
import signal

ENV = "ROBUST_AL_KILL_AT"
_passed: dict[str, int] = {}


def kill_point(name: str, iteration: int | None = None) -> None:
    """SIGKILL this process here if ``ROBUST_AL_KILL_AT`` names this point (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, count = spec.rpartition(":")
    if not count.isdigit():  # no count: point names may themselves hold a colon (answer:query)
        where, count = spec, "1"
    point, _, it = where.partition("@")
    if point != name or (it and (iteration is None or int(it) != int(iteration))):
        return
    _passed[where] = _passed.get(where, 0) + 1
    if _passed[where] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
