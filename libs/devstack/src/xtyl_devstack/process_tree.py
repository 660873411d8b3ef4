"""What a run left behind: snapshot a process's descendants, wait for them to be gone; and
what a process tree holds in memory (:func:`tree_rss`).

Used by the tests that kill pytest or ``up`` and check that no server survives, and by the
memory tests and benchmarks.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

SERVER_NAMES = frozenset({"postgres", "valkey-server", "weed"})


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` now (children, grandchildren…)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running; a zombie counts as gone, a reused pid too (create time is checked)."""
    result: list[psutil.Process] = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                result.append(proc)
        except psutil.NoSuchProcess:
            continue
    return result


def wait_gone(processes: list[psutil.Process], timeout: float = 20.0) -> list[psutil.Process]:
    """Wait for ``processes`` to end; those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def servers(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The PostgreSQL, Valkey and SeaweedFS processes among ``processes``."""
    result: list[psutil.Process] = []
    for proc in processes:
        try:
            if proc.name() in SERVER_NAMES:
                result.append(proc)
        except psutil.NoSuchProcess:
            continue
    return result


def using_path(path: Path) -> list[psutil.Process]:
    """Every process whose command line or working directory mentions ``path``."""
    needle = str(path)
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            if needle in " ".join(proc.cmdline()) or proc.cwd().startswith(needle):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return alive(found)


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL each one still alive, by pid (for clean-up after a test)."""
    for proc in alive(processes):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (a server and its workers); 0 once gone."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total
