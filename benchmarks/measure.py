"""Run one benchmark step as a subprocess and measure it from the outside.

Measured per command: wall time, exit status, and the peak resident set size of that child
process alone. ``os.wait4`` returns the child's own ``rusage``, but on Linux a child started
with ``vfork``/``posix_spawn`` (what ``subprocess`` uses) has the *parent's* peak RSS carried
into its ``ru_maxrss`` at ``exec``; so when that value does not exceed the parent's own peak,
the child's ``VmHWM`` (its high-water mark since ``exec``), sampled from ``/proc/<pid>/status``
while it runs, is used instead. Optionally the modification times of one file (e.g. a checkpoint written after every
training epoch) are sampled while the command runs, which gives epoch boundaries without
touching the code under test.

Output (stdout and stderr together) goes to a log file so a failed step can be diagnosed.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

__all__ = ["CommandResult", "CommandError", "run_command", "tail"]


class CommandError(RuntimeError):
    """A benchmark step exited non-zero or ran past its time limit."""


@dataclass
class CommandResult:
    """What one subprocess did.

    ``wall_s``: seconds from start to exit; ``peak_rss_mb``: the child's peak RSS (MiB, from
    ``wait4`` or ``VmHWM``, see the module doc; includes only that process, not grandchildren
    that exited earlier); ``marks``:
    wall-clock offsets (s from start) at which the watched file's mtime changed.
    """

    argv: list
    returncode: int
    wall_s: float
    peak_rss_mb: float
    log_path: Path
    marks: list = field(default_factory=list)
    timed_out: bool = False


def tail(path: Path, n_chars: int = 2000) -> str:
    """The last ``n_chars`` characters of a text file ('' if it does not exist)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    return data[-n_chars:].decode("utf-8", errors="replace")


def _vm_hwm_kib(pid: int) -> int:
    """``VmHWM`` of a running process in KiB (0 when unavailable, e.g. not Linux or exited)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _child_peak_kib(ru_maxrss: int, parent_peak: int, sampled_hwm: int) -> int:
    """The child's own peak: ``ru_maxrss`` when it exceeds what the parent could have passed on,
    else the sampled ``VmHWM`` (``ru_maxrss``, an upper bound, when nothing was sampled)."""
    if ru_maxrss > parent_peak or sampled_hwm <= 0:
        return ru_maxrss
    return sampled_hwm


class _MtimeWatcher(threading.Thread):
    def __init__(self, path: Path, t0: float, interval: float = 0.05):
        super().__init__(daemon=True)
        self.path, self.t0, self.interval = Path(path), t0, interval
        self.marks: list[float] = []
        self._halt = threading.Event()

        self._last = None

    def _poll(self) -> None:
        try:
            m = self.path.stat().st_mtime_ns
        except OSError:
            m = None
        if m is not None and m != self._last:
            self.marks.append(time.perf_counter() - self.t0)
            self._last = m

    def run(self) -> None:
        while not self._halt.is_set():
            self._poll()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling; one last look catches a change made just before the child exited."""
        self._halt.set()
        self.join()
        self._poll()


def run_command(argv: Sequence[str], log_path: Path, *, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[Path] = None, timeout_s: Optional[float] = None,
                watch_file: Optional[Path] = None, check: bool = True) -> CommandResult:
    """Run ``argv``, wait for it with ``os.wait4`` and return a :class:`CommandResult`.

    ``env`` entries are added to the current environment. With ``check`` a non-zero exit or a
    timeout raises :class:`CommandError` quoting the log's tail. On timeout the whole process
    group is killed (the child is started in its own session).
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update({k: str(v) for k, v in env.items()})
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(str(a) for a in argv) + "\n").encode())
        log.flush()
        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm = 0
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                env=full_env, cwd=cwd, start_new_session=True)
        watcher = None
        if watch_file is not None:
            watcher = _MtimeWatcher(watch_file, t0)
            watcher.start()
        timed_out = False
        deadline = None if timeout_s is None else t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            hwm = max(hwm, _vm_hwm_kib(proc.pid))
            if deadline is not None and time.perf_counter() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        if watcher is not None:
            watcher.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kib = (_child_peak_kib(usage.ru_maxrss, parent_peak, hwm) if sys.platform == "linux"
               else usage.ru_maxrss)
    peak = rss_kib / 1024.0 if sys.platform != "darwin" else rss_kib / 2 ** 20
    result = CommandResult(argv=[str(a) for a in argv], returncode=proc.returncode, wall_s=wall,
                           peak_rss_mb=peak, log_path=log_path,
                           marks=list(watcher.marks) if watcher else [], timed_out=timed_out)
    if check and (timed_out or proc.returncode != 0):
        why = f"timed out after {timeout_s:.0f} s" if timed_out else f"exit {proc.returncode}"
        raise CommandError(f"{' '.join(result.argv[:4])} ... {why}; log {log_path}:\n"
                           f"{tail(log_path)}")
    return result
