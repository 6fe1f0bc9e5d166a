"""One process at a time per run directory.

Two processes resuming one run both bought labels and wrote derived rows (measured: item rows 420 vs 300,
trust events 99 vs 55, every augmentation twice). The lock is an ``flock`` on ``RUN_DIR/campaign.lock``: the
kernel drops it when its holder exits, however it exits, so a lock left by a killed process never blocks.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive, non-blocking lock on a run directory; the holder's PID is written into the lock file."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "campaign.lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirBusy(f"{self.path.parent} is in use by process {holder}; wait for it to finish or stop it "
                             f"(kill {holder}), then resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def holder(self) -> int | None:
        """The PID of the live process holding the lock (None: nobody; a killed holder's lock is gone). Only
        looks: a shared, non-blocking try, released at once."""
        if self._fd is not None:
            return os.getpid()
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
