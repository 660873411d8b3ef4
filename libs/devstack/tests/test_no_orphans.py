"""However a pytest run ends, none of the servers it started survives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xtyl_devstack.process_tree import descendants, kill_all, servers, using_path, wait_gone
from xtyl_devstack.pytest_plugin import ENV_TMPDIR, make_run_dir, sweep_stale_dirs

HOLDING_TEST = """
import os, time
from pathlib import Path

def test_hold(database_url, redis_url, s3_bucket):
    Path(os.environ["HOLD_MARKER"]).write_text(os.environ.get("PYTEST_XDIST_WORKER", "main"))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(0.1)
"""


def _start_inner_pytest(
    public_tmp: Path, child_env: dict[str, str], extra: list[str]
) -> tuple[subprocess.Popen[bytes], Path]:
    (public_tmp / "test_hold.py").write_text(HOLDING_TEST)
    (public_tmp / "pytest.ini").write_text("[pytest]\n")
    marker = public_tmp / "held"
    env = {**child_env, "HOLD_MARKER": str(marker)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    argv += ["-c", str(public_tmp / "pytest.ini"), str(public_tmp / "test_hold.py")]
    proc = subprocess.Popen(
        argv,
        cwd=public_tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, like a shell job
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("the inner pytest never reached its test")
        time.sleep(0.1)
    return proc, marker


def _stack_dirs(public_tmp: Path) -> list[Path]:
    return sorted(public_tmp.glob("xtyl-devstack-session-*"))


@pytest.mark.slow
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist"])
def test_sigkill_of_pytest_leaves_no_server(
    public_tmp: Path, child_env: dict[str, str], xdist: list[str]
) -> None:
    proc, _ = _start_inner_pytest(public_tmp, child_env, xdist)
    tree = descendants(proc.pid)
    started = servers(tree)
    try:
        names = sorted({p.name() for p in started})
        assert names == ["postgres", "valkey-server", "weed"]
        postmasters = [p for p in started if p.name() == "postgres" and p.ppid() == proc.pid]
        assert len(postmasters) == 1  # one stack for the session, even with two workers

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        left = wait_gone(started, timeout=20)
        assert left == [], f"servers survived their SIGKILLed parent: {left}"
    finally:
        kill_all(tree)  # the xdist workers, asleep in the holding test


@pytest.mark.slow
@pytest.mark.parametrize(
    ("xdist", "how"),
    [([], "ctrl-c"), (["-n", "2"], "ctrl-c"), ([], "sigterm")],
    ids=["single-ctrl-c", "xdist-ctrl-c", "single-sigterm"],
)
def test_interrupted_pytest_stops_servers_and_removes_data(
    public_tmp: Path, child_env: dict[str, str], xdist: list[str], how: str
) -> None:
    proc, _ = _start_inner_pytest(public_tmp, child_env, xdist)
    tree = descendants(proc.pid)
    started = servers(tree)
    try:
        assert len(_stack_dirs(public_tmp)) == 1
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            os.kill(proc.pid, signal.SIGTERM)  # what CI does on a cancelled job
        code = proc.wait(60)
        assert code != 0  # interrupted
        assert wait_gone(started, timeout=10) == []
        assert _stack_dirs(public_tmp) == []  # the temp data dir went with it
    finally:
        kill_all(tree)


@pytest.mark.slow
def test_failing_run_leaves_no_server_and_no_data(
    public_tmp: Path, child_env: dict[str, str]
) -> None:
    (public_tmp / "test_fails.py").write_text(
        "def test_fails(database_url, redis_url, s3_bucket):\n    assert 1 == 2\n"
    )
    (public_tmp / "pytest.ini").write_text("[pytest]\n")
    ini, test = str(public_tmp / "pytest.ini"), str(public_tmp / "test_fails.py")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", ini, test],
        cwd=public_tmp,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 1
    assert "1 failed" in result.stdout
    assert using_path(public_tmp) == []
    assert _stack_dirs(public_tmp) == []


def test_next_run_sweeps_data_dirs_of_dead_runs(
    public_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = public_tmp / "xtyl-devstack-session-dead"
    dead.mkdir()
    (dead / "owner").write_text(f"{finished.pid} {time.time() - 5}")
    monkeypatch.setenv(ENV_TMPDIR, str(public_tmp))
    live = make_run_dir("session")  # owned by this (live) process

    sweep_stale_dirs(public_tmp)

    assert not dead.exists()
    assert live.exists()
