"""Small helpers the benchmark and evaluation scripts share: timing and command-line profiles."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from collections.abc import Callable, Sequence


def best_time(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of ``repeat`` calls of ``fn``, in seconds (the least disturbed by a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def apply_profile(args: argparse.Namespace, profile: dict[str, Any], argv: Sequence[str] | None = None) -> None:
    """Set each of ``profile``'s options on ``args`` unless the command line gave it (``--name`` or
    ``--name=value`` in ``argv``, default ``sys.argv[1:]``): a profile fills in, an explicit option wins."""
    given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    for k, v in profile.items():
        if f"--{k}" not in given:
            setattr(args, k, v)
