"""One driver per output directory: an exclusive lock file with a heartbeat.

Two drivers on one output directory would search the same examples and write duplicate rows.
:class:`OutputLock` makes the second one refuse to start, naming the holder::

    with OutputLock(shards_dir):          # raises OutputLockedError: held by host h, pid p ...
        run the search, write shards

The lock is ``<directory>/.drllm-lock.json`` (dot-prefixed: Parquet readers skip it), created
with ``O_CREAT | O_EXCL`` so that exactly one process wins, holding ``{host, pid, started,
heartbeat, token}``. While held, a daemon thread rewrites ``heartbeat`` every ``heartbeat_s``.
A lock is **stale**, and taken over, when its holder is a dead pid on this host or its heartbeat
is older than ``stale_after_s`` (a crashed driver on another node). Take-over renames the stale
file to a unique name first (only one contender's rename succeeds), then creates a fresh lock.

Works on any shared file system with atomic ``O_EXCL`` create and ``rename`` (local disks, NFSv3+,
Lustre, GCS/S3 FUSE mounts with care). Imports neither torch nor ray.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Callable, Optional

logger = logging.getLogger(__name__)

LOCK_NAME = ".drllm-lock.json"


class OutputLockedError(RuntimeError):
    """Another live driver holds the output directory."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock.

    Attributes:
        host: host name of the holder.
        pid: its process id.
        started: when it took the lock (ISO 8601 UTC).
        heartbeat: its last heartbeat (seconds since the epoch).
        token: unique id of this holding (distinguishes re-takes by the same pid).
    """

    host: str
    pid: int
    started: str
    heartbeat: float
    token: str

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.started}"


def read_holder(directory: str | os.PathLike) -> Optional[LockHolder]:
    """The holder recorded in ``directory``'s lock, or ``None`` when unlocked.

    An unreadable lock file (torn write) is reported as a holder with ``pid=-1`` and heartbeat
    0, i.e. stale.
    """
    path = Path(directory) / LOCK_NAME
    if not path.exists():
        return None
    holder = _read_file(path)
    if holder is None and path.exists():
        return LockHolder("?", -1, "?", 0.0, "?")
    return holder


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Exclusive, heartbeated lock on an output directory (see the module docstring).

    Args:
        directory: the directory to lock (created if missing).
        heartbeat_s: how often the holder refreshes its heartbeat (seconds); 0: no thread
            (call :meth:`heartbeat` yourself).
        stale_after_s: a lock whose heartbeat is older than this is stale (seconds); keep it
            well above ``heartbeat_s``.
        clock: wall clock in seconds since the epoch (injectable for tests).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        heartbeat_s: float = 30.0,
        stale_after_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_s < 0 or stale_after_s <= 0:
            raise ValueError("need heartbeat_s >= 0 and stale_after_s > 0 seconds")
        if heartbeat_s and stale_after_s <= 2 * heartbeat_s:
            raise ValueError(f"stale_after_s ({stale_after_s:g}) must exceed twice heartbeat_s "
                             f"({heartbeat_s:g}), or a live holder may look stale")
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        self._clock = clock
        self.holder: Optional[LockHolder] = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ acquire / release

    def is_stale(self, holder: LockHolder) -> bool:
        """Whether ``holder`` is dead (same host, no such pid) or silent too long."""
        if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
            return True
        return self._clock() - holder.heartbeat > self.stale_after_s

    def acquire(self) -> "OutputLock":
        """Take the lock, taking over a stale one.

        Raises:
            OutputLockedError: a live driver holds it (message names host, pid, start time).
        """
        if self.holder is not None:
            raise RuntimeError(f"{self.path} is already held by this OutputLock")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                break
            current = read_holder(self.directory)
            if current is None:
                continue  # released meanwhile: try again
            if not self.is_stale(current):
                raise OutputLockedError(
                    f"{self.directory} is in use by another driver ({current.describe()}, "
                    f"last heartbeat {self._clock() - current.heartbeat:.0f} s ago); wait for "
                    "it to finish, stop it, or use another output directory. A crashed "
                    f"driver's lock is taken over once its pid is gone (same host) or after "
                    f"{self.stale_after_s:.0f} s without a heartbeat"
                )
            self._take_over(current)
        else:
            raise OutputLockedError(f"could not take {self.path}: other drivers keep racing for it")
        if self.heartbeat_s:
            self._thread = threading.Thread(target=self._beat, name="drllm-lock-heartbeat",
                                            daemon=True)
            self._thread.start()
        logger.info("locked %s (%s)", self.directory, self.holder.describe())
        return self

    def _record(self, token: str, started: str) -> LockHolder:
        return LockHolder(socket.gethostname(), os.getpid(), started, self._clock(), token)

    def _try_create(self) -> bool:
        holder = self._record(uuid.uuid4().hex,
                              datetime.now(timezone.utc).isoformat(timespec="seconds"))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(holder), f)
            f.flush()
            os.fsync(f.fileno())
        self.holder = holder
        return True

    def _take_over(self, stale: LockHolder) -> None:
        moved = self.path.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # another contender moved it first
        taken = _read_file(moved)
        if taken is not None and taken.token != stale.token:
            # a contender replaced the stale lock between our read and our rename: give it back
            try:
                os.link(moved, self.path)
            except FileExistsError:
                pass
            moved.unlink(missing_ok=True)
            return
        logger.warning("taking over the stale lock of %s (%s)", self.directory, stale.describe())
        moved.unlink(missing_ok=True)

    def heartbeat(self) -> None:
        """Refresh the heartbeat; marks the lock :attr:`lost` if another driver took it over."""
        if self.holder is None:
            return
        current = read_holder(self.directory)
        if current is None or current.token != self.holder.token:
            if not self.lost:
                logger.error("lost the lock on %s to %s", self.directory,
                             current.describe() if current else "nobody (deleted)")
            self.lost = True
            return
        self.holder = self._record(self.holder.token, self.holder.started)
        tmp = self.path.with_name(f"{LOCK_NAME}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self.holder)), encoding="utf-8")
        os.replace(tmp, self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except OSError:
                logger.warning("lock heartbeat on %s failed", self.directory, exc_info=True)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self.holder is None:
            return
        current = read_holder(self.directory)
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)
        self.holder = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_file(path: Path) -> Optional[LockHolder]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(str(data["host"]), int(data["pid"]), str(data["started"]),
                          float(data["heartbeat"]), str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
