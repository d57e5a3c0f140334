"""Symbolic answer equivalence (math-verify) with a hard time bound that works in any thread.

Why a child process. ``math_verify.parse`` / ``verify`` bound their time with ``signal.alarm``,
which only works in the main thread of the main interpreter; graders run inside Ray actors
(async / threaded) and sympy can also hang inside C code that no signal interrupts (e.g.
``9^{9^{9^9}}`` evaluates a huge integer power). A thread with a deadline cannot be stopped and
would keep burning a core. So :class:`MathVerifyProcess` runs math-verify in a small persistent
child process (``python -c 'from drllm.rewards.math_worker import serve; serve()'``) and talks to
it over pipes with one JSON line per request:

* inside the child, math-verify runs in the MAIN thread, so its own signal timeouts
  (``inner_timeout_s``) still end slow pure-Python simplifications cheaply;
* the parent waits at most ``timeout_s`` for the answer (``select`` on the pipe); past the
  deadline it kills the child, reports a timeout (the caller scores 0), and starts a fresh child
  on the next request (``startup_timeout_s``, about half a second on a laptop).

Callable from any thread (requests are serialised by a lock); the child holds the parsed-gold
cache. The comparison itself is :func:`drllm.rewards.math_equivalence.equivalent`. POSIX only
(``select`` on pipes).
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SERVE_CODE = "from drllm.rewards.math_worker import serve; serve()"


@dataclass(frozen=True)
class SymbolicCheck:
    """Outcome of one symbolic comparison.

    Attributes:
        equal: True only when math-verify proved the answers equivalent in time.
        detail: ``"math-verify"`` (a real verdict), ``"timed out"``, ``"unavailable"`` (the child
            could not start) or ``"error: ..."``.
    """

    equal: bool
    detail: str


class _WorkerDied(RuntimeError):
    pass


def _terminate(proc: subprocess.Popen) -> None:
    """Kill a child process and reap it (idempotent)."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed child always exits
        logger.error("math-verify worker pid %d did not exit after SIGKILL", proc.pid)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class MathVerifyProcess:
    """Client of one math-verify child process, restarted after every timeout or crash.

    Args:
        timeout_s: wall-clock bound on one comparison (parse of the prediction + verify), in s.
        startup_timeout_s: bound on starting a child (imports sympy and math-verify), in s.
        retry_after_s: after a failed start, answer ``"unavailable"`` for this long instead of
            trying again on every call, in s.
    """

    def __init__(self, timeout_s: float = 10.0, startup_timeout_s: float = 60.0,
                 retry_after_s: float = 30.0) -> None:
        if timeout_s <= 0 or startup_timeout_s <= 0 or retry_after_s < 0:
            raise ValueError("timeout_s and startup_timeout_s must be > 0 and retry_after_s >= 0, "
                             f"got {timeout_s}, {startup_timeout_s}, {retry_after_s}")
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.retry_after_s = float(retry_after_s)
        # math-verify's own signal alarms inside the child: whole seconds, well under the bound.
        self.inner_timeout_s = max(1, int(self.timeout_s / 3))
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._buffer = bytearray()
        self._unavailable_until = 0.0
        self.starts = 0

    def __reduce__(self) -> tuple:
        """Pickle the configuration only (a Ray actor gets its own child process)."""
        return (type(self), (self.timeout_s, self.startup_timeout_s, self.retry_after_s))

    @property
    def pid(self) -> int | None:
        """Process id of the live child, if any."""
        return None if self._proc is None else self._proc.pid

    def check(self, gold: str, pred: str) -> SymbolicCheck:
        """Whether ``pred`` is mathematically equivalent to ``gold`` (LaTeX, no ``$``).

        Never raises; any failure is ``equal=False`` with the reason in ``detail``.
        """
        payload = json.dumps({"gold": gold, "pred": pred, "timeout": self.inner_timeout_s})
        with self._lock:
            if self._proc is None and not self._start():
                return SymbolicCheck(False, "unavailable")
            try:
                reply = self._request(payload.encode() + b"\n", time.monotonic() + self.timeout_s)
            except (_WorkerDied, OSError, ValueError) as exc:
                logger.warning("math-verify worker died (%s); restarting on next request", exc)
                self._stop()
                return SymbolicCheck(False, "error: worker died")
            if reply is None:
                logger.warning("math-verify check exceeded %.1fs (pred %r...); killing worker",
                               self.timeout_s, pred[:80])
                self._stop()
                return SymbolicCheck(False, "timed out")
        if "error" in reply:
            return SymbolicCheck(False, f"error: {reply['error']}")
        return SymbolicCheck(bool(reply.get("equal")), "math-verify")

    def close(self) -> None:
        """Stop the child process (a later :meth:`check` starts a new one)."""
        with self._lock:
            self._stop()

    def _start(self) -> bool:
        if time.monotonic() < self._unavailable_until:
            return False
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen([sys.executable, "-c", _SERVE_CODE], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env=env, close_fds=True)
        except OSError as exc:
            logger.error("cannot start math-verify worker: %s; symbolic checks disabled for %.0fs",
                         exc, self.retry_after_s)
            self._unavailable_until = time.monotonic() + self.retry_after_s
            return False
        self._proc = proc
        self._finalizer = weakref.finalize(self, _terminate, proc)
        self._buffer.clear()
        try:
            ready = self._read_line(time.monotonic() + self.startup_timeout_s)
        except (_WorkerDied, OSError, ValueError):
            ready = None
        if ready is None or not ready.get("ready"):
            logger.error("math-verify worker failed to start within %.0fs; symbolic checks "
                         "disabled for %.0fs", self.startup_timeout_s, self.retry_after_s)
            self._stop()
            self._unavailable_until = time.monotonic() + self.retry_after_s
            return False
        self.starts += 1
        logger.debug("math-verify worker pid %d ready", proc.pid)
        return True

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _terminate once
        self._proc = None
        self._finalizer = None
        self._buffer.clear()

    def _request(self, payload: bytes, deadline: float) -> dict | None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(payload)
        self._proc.stdin.flush()
        return self._read_line(deadline)

    def _read_line(self, deadline: float) -> dict | None:
        """Next JSON line from the child, None at the deadline; raises ``_WorkerDied`` on EOF."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _WorkerDied(f"exit code {self._proc.poll()}")
            self._buffer.extend(chunk)
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return json.loads(line)


# ---------------------------------------------------------------------------------------------
# Child side.


def serve() -> None:
    """Child main loop: one JSON request per stdin line, one JSON reply per stdout line.

    Request ``{"gold", "pred", "timeout"}``; reply ``{"equal": bool}`` or ``{"error": str}``.
    Exits on stdin EOF (the parent closed the pipe or died).
    """
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from math_verify.errors import TimeoutException  # import before announcing readiness

    from drllm.rewards.math_equivalence import equivalent

    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            reply = {"equal": equivalent(request["gold"], request["pred"],
                                         int(request["timeout"]))}
        except (Exception, TimeoutException) as exc:  # report, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
