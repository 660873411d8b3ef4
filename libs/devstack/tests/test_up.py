"""``python -m xtyl_devstack up``: everything comes up, is reported, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from xtyl_devstack.ports import free_port
from xtyl_devstack.postgres import run_sql
from xtyl_devstack.process_tree import descendants, kill_all, servers, wait_gone
from xtyl_devstack.redis import ping
from xtyl_devstack.stack import StackInfo

STANDIN_SERVICE = """
import http.server, os, sys, threading, time

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
print("stand-in listening", os.environ["PORT"], "db", os.environ["DATABASE_URL"], flush=True)
die_after = float(os.environ.get("DIE_AFTER", "0"))
if die_after:
    def crash():
        print("stand-in crashing", flush=True)
        os._exit(3)
    threading.Timer(die_after, crash).start()
server.serve_forever()
"""

RUNNER = """
import sys
from collections.abc import Iterator
from pathlib import Path
from xtyl_devstack.up import ProcessSpec, run_up
import logging
logging.basicConfig(level=logging.INFO, format="devstack | %(message)s", stream=sys.stdout)

def standins(info, env):
    specs = []
    for name, port, die_after in {services}:
        specs.append(ProcessSpec(
            name=name,
            argv=[sys.executable, {standin!r}],
            env={{**env, "PORT": str(port), "DIE_AFTER": str(die_after)}},
            ready_url=f"http://127.0.0.1:{{port}}/readyz",
        ))
    return specs

sys.exit(run_up(Path({data_dir!r}), services=standins, migrate=False))
"""


def _start_up(
    public_tmp: Path, env: dict[str, str], data_dir: Path, die_after: float = 0.0
) -> tuple[subprocess.Popen[str], Path]:
    standin = public_tmp / "standin.py"
    standin.write_text(STANDIN_SERVICE)
    services = [("gateway", free_port(), 0.0), ("storage", free_port(), die_after)]
    script = public_tmp / "run_up.py"
    script.write_text(
        RUNNER.format(services=repr(services), standin=str(standin), data_dir=str(data_dir))
    )
    output = public_tmp / "up.out"
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return proc, output


def _wait_for_text(proc: subprocess.Popen[str], output: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = output.read_text()
        if text in content:
            return content
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"never printed {text!r}; output:\n{content}")
        time.sleep(0.1)


@pytest.fixture
def seen() -> Iterator[list[psutil.Process]]:
    """Processes a test saw under its runner: all gone (or killed) before the data is removed."""
    processes: list[psutil.Process] = []
    yield processes
    wait_gone(processes, timeout=20)
    kill_all(processes)


def _stop_runner(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_up_runs_until_sigterm_and_leaves_nothing(
    public_tmp: Path, child_env: dict[str, str], seen: list[psutil.Process]
) -> None:
    data_dir = public_tmp / "data"
    proc, output = _start_up(public_tmp, child_env, data_dir)
    try:
        summary = _wait_for_text(proc, output, "xtyl local stack ready in", timeout=60)
        seen += descendants(proc.pid)
        assert "gateway   http://127.0.0.1:" in summary
        assert "/schema/swagger" in summary
        assert "gateway  | stand-in listening" in summary  # services log to the terminal
        assert sorted({p.name() for p in servers(seen)}) == ["postgres", "valkey-server", "weed"]

        info = StackInfo.from_json((data_dir / "stack.json").read_text())
        vector = run_sql(
            info.database_url, "SELECT extname FROM pg_extension WHERE extname='vector'"
        )
        assert vector == "vector"
        run_sql(info.database_url, "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('hi')")
        printed = subprocess.run(
            [sys.executable, "-m", "xtyl_devstack", "env", "--data-dir", str(data_dir)],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert f"export DATABASE_URL={info.database_url}" in printed
        assert "export INTERNAL_JWT_SECRET=" in printed
        assert f"export R2_ENDPOINT={info.s3_endpoint}" in printed

        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        assert wait_gone(seen, timeout=10) == []
        assert not (data_dir / "stack.json").exists()
        assert "stopped postgres" in output.read_text()
    finally:
        _stop_runner(proc)

    # A second run finds the data of the first (ports may differ), then a service keeps
    # crashing: it alone is restarted, later each time; the rest of the stack stays up.
    proc, output = _start_up(public_tmp, child_env, data_dir, die_after=1.0)
    try:
        _wait_for_text(proc, output, "xtyl local stack ready in", timeout=60)
        seen += descendants(proc.pid)
        info = StackInfo.from_json((data_dir / "stack.json").read_text())
        assert run_sql(info.database_url, "SELECT note FROM kept") == "hi"
        content = _wait_for_text(proc, output, "restarting it in 2.0 s", timeout=60)
        assert "up: storage exited (code 3) after" in content
        assert "restarting it in 1.0 s; last log lines:" in content
        assert "stand-in crashing" in content
        assert "up: storage restarted (restart 1)" in content
        assert content.count("storage  | stand-in listening") >= 2
        assert "gateway exited" not in content
        assert content.count("gateway  | stand-in listening") == 1
        assert run_sql(info.database_url, "SELECT note FROM kept") == "hi"  # servers still up
        assert proc.poll() is None

        # a server that dies is restarted the same way (same port: the URLs stay valid)
        [valkey] = [p for p in servers(descendants(proc.pid)) if p.name() == "valkey-server"]
        valkey.kill()
        content = _wait_for_text(proc, output, "up: redis restarted (restart 1)", timeout=60)
        assert "up: redis exited (code ?) after" in content
        port = int(info.redis_url.rsplit(":", 1)[1].split("/")[0])
        assert ping(port)
        seen += descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        assert wait_gone(seen, timeout=10) == []
    finally:
        _stop_runner(proc)


@pytest.mark.slow
def test_sigkill_of_up_leaves_no_process(
    public_tmp: Path, child_env: dict[str, str], seen: list[psutil.Process]
) -> None:
    proc, output = _start_up(public_tmp, child_env, public_tmp / "data")
    try:
        _wait_for_text(proc, output, "xtyl local stack ready in", timeout=60)
        seen += descendants(proc.pid)
        assert len(servers(seen)) >= 3
        assert len(seen) > len(servers(seen))  # the stand-in services too
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_gone(seen, timeout=20) == []  # all ended by their parent-death signal
    finally:
        _stop_runner(proc)


def test_up_refuses_a_taken_port_in_one_line(public_tmp: Path, child_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "xtyl_devstack", "up", "--data-dir", str(public_tmp / "d")],
            env={**child_env, "GATEWAY_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"up: port {port} for gateway is already in use (set GATEWAY_PORT)"
    )


def test_env_without_a_running_stack_says_so(public_tmp: Path, child_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xtyl_devstack", "env", "--data-dir", str(public_tmp)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "no running stack" in result.stderr
    assert result.stdout == ""
