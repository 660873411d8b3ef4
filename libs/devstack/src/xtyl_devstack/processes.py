"""Child processes that cannot outlive us.

Every server and service is a direct child (never daemonized), in a process group of its own (so
a Ctrl-C on the terminal reaches only the runner, which stops things in order), and asks the
kernel for a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so even a SIGKILLed
parent leaves no orphan.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not the process. All
children are therefore forked by one daemon thread (:class:`_Spawner`) that lives as long as the
process, whatever thread asks for the start. When a child runs as another user, ``subprocess``
switches uid/gid before it calls ``preexec_fn`` (the kernel clears the death signal on a
credential change), so the death signal is set after the switch, then the parent is checked to
still be alive.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from xtyl_devstack.errors import DevstackError, ServerStartError

log = logging.getLogger("xtyl_devstack")

_PR_SET_PDEATHSIG = 1
_SPAWN_TIMEOUT_S = 60.0
_TAIL_LINES = 30


@dataclass(frozen=True, slots=True)
class RunAs:
    """The unprivileged account a child runs as (only used when we are root)."""

    user: str
    uid: int
    gid: int


def _death_signal_preexec(death_signal: signal.Signals, parent_pid: int) -> Callable[[], None]:
    """``preexec_fn``: ask for ``death_signal`` when the parent dies; give up if it already has."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


class _Spawner:
    """One long-lived daemon thread that forks every child (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="xtyl-devstack-spawner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def spawn(self, job: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        future: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((job, future))
        return future.result(timeout=_SPAWN_TIMEOUT_S)


_spawner_lock = threading.Lock()
_spawner: _Spawner | None = None


def _get_spawner() -> _Spawner:
    global _spawner  # noqa: PLW0603 - one forking thread per process is the point
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
        return _spawner


def popen(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    run_as: RunAs | None = None,
    death_signal: signal.Signals = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a direct child in its own process group, killed if we die."""
    parent_pid = os.getpid()
    switch_user = run_as is not None and os.geteuid() == 0

    def job() -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - argv is built by this package, no shell
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            process_group=0,
            user=run_as.uid if switch_user and run_as else None,
            group=run_as.gid if switch_user and run_as else None,
            extra_groups=[] if switch_user else None,
            preexec_fn=_death_signal_preexec(death_signal, parent_pid),  # noqa: PLW1509
        )

    return _get_spawner().spawn(job)


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
    timeout: float = 60.0,
) -> str:
    """Run a short command to completion; its output, or a one-line error with its output."""
    proc = popen(argv, env=env, run_as=run_as, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate(timeout=10)
        raise DevstackError(f"{what} did not finish within {timeout:.0f} s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-_TAIL_LINES:])
        raise DevstackError(f"{what} failed with exit code {proc.returncode}:\n{tail}")
    return text


def tail_file(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Wait until child ``pid`` has exited, without reaping it; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ManagedProcess:
    """A long-running child: started, probed until ready, stopped politely then firmly.

    Output goes to ``log_path`` (servers) or, with ``echo_prefix``, line by line to our stdout
    with the prefix (services); the last lines are kept either way for error messages.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        echo_prefix: str | None = None,
        run_as: RunAs | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        death_signal: signal.Signals = signal.SIGTERM,
        stop_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_path
        self.echo_prefix = echo_prefix
        self.run_as = run_as
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """``None`` while running (or never started), else the exit code."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._lines.clear()
        if self.echo_prefix is not None:
            self._proc = popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                run_as=self.run_as,
                death_signal=self.death_signal,
            )
            self._pump = threading.Thread(
                target=self._echo, name=f"xtyl-devstack-{self.name}-log", daemon=True
            )
            self._pump.start()
        else:
            if self.log_path is None:
                raise ValueError("a ManagedProcess needs a log_path or an echo_prefix")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as sink:
                self._proc = popen(
                    self.argv,
                    env=self.env,
                    cwd=self.cwd,
                    stdout=sink,
                    stderr=sink,
                    run_as=self.run_as,
                    death_signal=self.death_signal,
                )
        log.info("started %s (pid %s)", self.name, self._proc.pid)

    def restart(self) -> None:
        """Start again after the process ended; what is left of its process group (workers
        of a server whose leader died) is killed first."""
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            _kill_group(proc.pid)
        self._finish_pump()
        self.start()

    def _echo(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        prefix = f"{self.echo_prefix} | "
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self._lines.append(line)
                sys.stdout.write(prefix + line + "\n")
                sys.stdout.flush()

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines of output, for error messages."""
        if self.echo_prefix is not None:
            return "\n".join(list(self._lines)[-lines:])
        if self.log_path is None:
            return "(no log)"
        return tail_file(self.log_path, lines)

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float, what: str = "") -> float:
        """Call ``probe`` until it answers True; seconds waited. Raises with the log tail."""
        started = time.monotonic()
        deadline = started + timeout
        where = f" ({self.log_path})" if self.log_path is not None else ""
        while True:
            code = self.returncode
            if self._proc is None or code is not None:
                self._finish_pump()
                raise ServerStartError(
                    f"{self.name} exited with code {code} while starting{where}; "
                    f"last log lines:\n{self.log_tail()}"
                )
            if probe():
                return time.monotonic() - started
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} was not ready{what} after {timeout:.0f} s{where}; "
                    f"last log lines:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Polite signal, wait ``stop_timeout``, then SIGKILL; every process of its group goes."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            if not _exited_unreaped(proc.pid, self.stop_timeout):
                level = logging.WARNING if self.stop_timeout >= 5 else logging.INFO
                log.log(level, "%s still up after %.1f s: killing it", self.name, self.stop_timeout)
                _kill_group(proc.pid)
                _exited_unreaped(proc.pid, 10)
            # The leader is a zombie until reaped, so its pid (= the group id) cannot have
            # been reused: kill what is left of its group (workers, backends), then reap.
            _kill_group(proc.pid)
            proc.wait(10)
            log.info("stopped %s (exit code %s)", self.name, proc.returncode)
        self._finish_pump()

    def _finish_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(5)
            self._pump = None
