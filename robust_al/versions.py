"""What produced a result: library versions and the source commit, written next to every output."""
from __future__ import annotations

import importlib
import platform
import subprocess
from pathlib import Path

CAMPAIGN_MODULES = ("numpy", "torch", "art", "sklearn", "crowdkit", "pandas")


def versions(*modules: str) -> dict[str, str | None]:
    """robust-al's, Python's and each named module's version (None where it is not installed)."""
    import robust_al

    out: dict[str, str | None] = {"robust_al": robust_al.__version__, "python": platform.python_version()}
    for name in modules:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            out[name] = None
    return out


def git_commit(where: str | Path) -> str | None:
    """The commit checked out at ``where`` (None outside a git checkout or without git)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                              cwd=Path(where).resolve(), timeout=10)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
