"""Files written whole or not at all (exports, label-only results): no torch, no pandas, light to import."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO
from collections.abc import Callable


def atomic_write(path: Path, write: Callable[[IO], object], binary: bool = False) -> None:
    """Write ``path`` through a temporary file in its folder, renamed into place when complete: a crash leaves
    the previous file (or none), never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the export is an ordinary file
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8",
                       newline=None if binary else "") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
