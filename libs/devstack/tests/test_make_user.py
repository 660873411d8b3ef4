"""``AUTH_PORT=… make up`` then ``make user`` from another shell (no ``AUTH_PORT`` there): the
user is signed up through the stack's own local Auth, read from the data dir, and the token it
prints opens the stack's gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from xtyl_devstack.ports import free_port
from xtyl_devstack.process_tree import descendants, kill_all, wait_gone

RUNNER = """
import logging, sys
from pathlib import Path
from xtyl_devstack.up import default_services, run_up
logging.basicConfig(level=logging.INFO, format="devstack | %(message)s", stream=sys.stdout)

def some_services(info, env):
    wanted = {{"auth", "brevo", "gateway", "notify"}}
    return [spec for spec in default_services(info, env) if spec.name in wanted]

sys.exit(run_up(Path({data_dir!r}), services=some_services))
"""
PORTS = ("AUTH_PORT", "BREVO_PORT", "GATEWAY_PORT", "NOTIFY_PORT", "STORAGE_PORT", "RAG_PORT")


def _wait_for(proc: subprocess.Popen[bytes], output: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = output.read_text()
        if text in content:
            return content
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"never printed {text!r}; output:\n{content}")
        time.sleep(0.2)


def _user(
    data_dir: Path, env: dict[str, str], cwd: Path, email: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "xtyl_devstack",
            "user",
            "--data-dir",
            str(data_dir),
            "--email",
            email,
            "--name",
            "Ada Lovelace",
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _me(gateway: str, token: str) -> dict[str, str]:
    request = urllib.request.Request(  # noqa: S310 - the local gateway
        gateway + "/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_make_user_signs_up_through_the_running_stacks_auth(
    request: pytest.FixtureRequest, public_tmp: Path, child_env: dict[str, str]
) -> None:
    root = request.config.rootpath
    data_dir = public_tmp / "data"
    script = public_tmp / "run_up.py"
    script.write_text(RUNNER.format(data_dir=str(data_dir)))
    ports = {name: str(free_port()) for name in PORTS}
    output = public_tmp / "up.out"
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            env={**child_env, **ports},
            cwd=root,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seen: list[psutil.Process] = []
    try:
        summary = _wait_for(proc, output, "xtyl local stack ready in", timeout=180)
        seen += descendants(proc.pid)
        auth_url = f"http://127.0.0.1:{ports['AUTH_PORT']}"
        assert f"NEXT_PUBLIC_SUPABASE_URL={auth_url}" in summary
        anon_key = (data_dir / "supabase_anon_key").read_text().strip()
        assert f"NEXT_PUBLIC_SUPABASE_ANON_KEY={anon_key}" in summary

        shell = {k: v for k, v in child_env.items() if k not in PORTS}  # another terminal
        made = _user(data_dir, shell, root, "ada@example.com")
        assert made.returncode == 0, made.stderr
        assert "signed up user" in made.stderr
        gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        me = _me(gateway, made.stdout.strip())
        assert me["email"] == "ada@example.com"
        assert me["full_name"] == "Ada Lovelace"

        again = _user(data_dir, shell, root, "ada@example.com")
        assert again.returncode == 0, again.stderr
        assert "found user" in again.stderr
        assert _me(gateway, again.stdout.strip())["id"] == me["id"]

        printed = subprocess.run(
            [sys.executable, "-m", "xtyl_devstack", "env", "--data-dir", str(data_dir)],
            env=shell,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"export SUPABASE_URL={auth_url}\n" in printed
        seen += descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        assert wait_gone(seen, timeout=20) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_all(seen)
