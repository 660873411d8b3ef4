"""``make deploy-check``: compose/docker-compose.prod.yml run as operators run it, on a real
Docker engine, and used end to end. Needs the images (``make images``), Docker Compose v2
(``make deploy-tools``) and the project's venv; run as root or a user of the ``docker`` group.

Production's Postgres, S3, Auth and Brevo are managed services; here they are the embedded
servers of ``xtyl_devstack`` on 127.0.0.1 (PostgreSQL + pgvector, SeaweedFS, the local Supabase
Auth reading supabase/config.toml, the Brevo stand-in), and the containers join the host
network (compose/docker-compose.deploy-check.yml) to reach them. Redis is the prod file's own
container. What is checked, in order:

1. ``compose up``: migrate runs first and exits 0 before any other container of ours starts;
   every service turns healthy (its /readyz), the workers keep running;
2. every container of ours runs as uid 10001, cannot write its root filesystem, and has the
   memory and CPU limits of the prod file;
3. a user signs up through the local Auth, and through the containerised gateway reads
   /v1/me, uploads a PDF, sees its document indexed, finds it by search, and a welcome email
   reaches the Brevo stand-in;
4. SIGTERM (``compose stop``) stops every container within its stop_grace_period, each with
   exit status 0, and no log line of ours is an error.

Everything it started is removed at the end (``compose down -v``, the servers, the temp dir),
also when a check fails. ``--keep`` leaves the stack up after a failure, for a look.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xtyl_devstack.auth.config import find_config
from xtyl_devstack.issuer import mint_anon_key
from xtyl_devstack.ports import free_port
from xtyl_devstack.postgres import PostgresServer
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.s3 import S3Server

ROOT = Path(__file__).resolve().parent.parent
PROD = ROOT / "compose" / "docker-compose.prod.yml"
OVERRIDE = ROOT / "compose" / "docker-compose.deploy-check.yml"
PROJECT = "xtyl-deploy-check"
HTTP_SERVICES = ("gateway", "storage", "rag", "notify")
WORKERS = ("storage-worker", "rag-worker", "notify-worker")
OURS = (*HTTP_SERVICES, *WORKERS)
UID = 10001
HEALTHY_TIMEOUT_S = 240.0
FLOW_TIMEOUT_S = 180.0


class CheckFailed(Exception):
    """A check of the deployment did not hold."""


def say(message: str) -> None:
    print(f"deploy-check: {message}", flush=True)


# ------------------------------------------------------------------------------------- docker
@dataclass
class Engine:
    docker: str
    compose: list[str]
    env_file: Path
    env: dict[str, str] = field(default_factory=lambda: {})

    def run(
        self, argv: list[str], *, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - our own argv
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
            check=False,
        )
        if check and result.returncode != 0:
            raise CheckFailed(f"{' '.join(argv[:6])} ...: {result.stderr.strip()[-2000:]}")
        return result

    def compose_cmd(self, *args: str) -> list[str]:
        return [
            *self.compose,
            "--project-name",
            PROJECT,
            "--project-directory",
            str(PROD.parent),
            "-f",
            str(PROD),
            "-f",
            str(OVERRIDE),
            "--env-file",
            str(self.env_file),
            *args,
        ]

    def container(self, service: str) -> dict[str, Any]:
        ids = self.run(self.compose_cmd("ps", "--all", "-q", service)).stdout.split()
        if len(ids) != 1:
            raise CheckFailed(f"{service}: expected one container, found {len(ids)}")
        return json.loads(self.run([self.docker, "inspect", ids[0]]).stdout)[0]


def compose_command(docker: str) -> list[str]:
    """Docker Compose v2: ``COMPOSE``, .tools/deploy's binary, or the client's plugin."""
    if os.environ.get("COMPOSE"):
        return os.environ["COMPOSE"].split()
    tool = ROOT / ".tools" / "deploy" / "bin" / "docker-compose"
    if tool.exists():
        return [str(tool)]
    probe = subprocess.run(  # noqa: S603
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0:
        return [docker, "compose"]
    raise CheckFailed("no Docker Compose v2: run `make deploy-tools` or set COMPOSE")


def docker_client() -> str:
    """The client docker/engine.sh picks (one that talks to the running engine)."""
    chosen = subprocess.run(  # noqa: S603
        ["bash", "-c", f"source {ROOT / 'docker' / 'engine.sh'} && echo $DOCKER"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if chosen.returncode != 0:
        raise CheckFailed(chosen.stderr.strip())
    return chosen.stdout.strip()


def image_present_or_pulled(docker: str, image: str) -> bool:
    for argv in ([docker, "image", "inspect", image], [docker, "pull", "--quiet", image]):
        done = subprocess.run(argv, capture_output=True, check=False, timeout=300)  # noqa: S603
        if done.returncode == 0:
            return True
    return False


def redis_image(docker: str) -> str:
    """``redis:7`` when here or pullable, else the offline stand-in (docker/offline-bases.sh)."""
    if image_present_or_pulled(docker, "redis:7"):
        return "redis:7"
    offline = os.environ.get("OFFLINE_REDIS_IMAGE", "xtyl-offline/redis:7")
    if not image_present_or_pulled(docker, offline):
        subprocess.run([str(ROOT / "docker" / "offline-bases.sh")], check=True)  # noqa: S603
    say(f"no registry: redis from {offline}")
    return offline


# ------------------------------------------------------------------------------------- http
def http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback URLs we built
        url, data=body, method=method, headers=dict(headers or {})
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise CheckFailed(f"{what}: not after {timeout:.0f} s (last: {last!r})")


def make_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with one text line per item (Helvetica, uncompressed)."""
    escaped = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    stream = "\n".join(
        ["BT", "/F1 11 Tf", "14 TL", "50 740 Td", *(f"({ln}) Tj T*" for ln in escaped), "ET"]
    ).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


# ------------------------------------------------------------------------------------- stack
@dataclass
class HostServers:
    """What production has as managed services, on 127.0.0.1."""

    work: Path
    postgres: PostgresServer
    s3: S3Server
    brevo: ManagedProcess
    brevo_port: int
    auth_port: int
    auth: ManagedProcess | None = None

    @classmethod
    def create(cls, work: Path) -> HostServers:
        logs = work / "logs"
        brevo_port = free_port()
        return cls(
            work=work,
            postgres=PostgresServer(work / "pg", log_path=logs / "postgres.log"),
            s3=S3Server(
                work / "s3",
                access_key=f"xtyl{secrets.token_hex(8)}",
                secret_key=secrets.token_urlsafe(30),
                bucket="xtyl-deploy-check",
                log_path=logs / "s3.log",
            ),
            brevo=ManagedProcess(
                "brevo",
                [
                    sys.executable,
                    "-m",
                    "xtyl_devstack.brevo",
                    "--port",
                    str(brevo_port),
                    "--data-dir",
                    str(work / "brevo"),
                ],
                log_path=logs / "brevo.log",
            ),
            brevo_port=brevo_port,
            auth_port=free_port(),
        )

    def start(self) -> None:
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(self.postgres.start), pool.submit(self.s3.start)]:
                future.result(timeout=180)
        self.brevo.start()
        wait_for(
            "brevo stand-in", lambda: http("GET", self.brevo_url + "/_local/emails")[0] == 200, 30
        )

    def start_auth(self, env: Mapping[str, str], gateway_url: str) -> None:
        """After the migrations (its tables hang off auth.users, which they create)."""
        self.auth = ManagedProcess(
            "auth",
            [
                sys.executable,
                "-m",
                "xtyl_devstack.auth",
                "--key-dir",
                str(self.work / "auth"),
                "--port",
                str(self.auth_port),
                "--config",
                str(find_config()),
                "--site-url",
                env["APP_URL"],
                "--hook-uri",
                f"{gateway_url}/webhooks/auth/send-email",
            ],
            env={**os.environ, **env},
            log_path=self.work / "logs" / "auth.log",
        )
        self.auth.start()
        wait_for("local Auth", lambda: http("GET", self.auth_url + "/auth/v1/health")[0] == 200, 30)

    @property
    def brevo_url(self) -> str:
        return f"http://127.0.0.1:{self.brevo_port}"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.auth_port}"

    def stop(self) -> None:
        for stop in (
            self.auth.stop if self.auth else None,
            self.brevo.stop,
            self.s3.stop,
            self.postgres.stop,
        ):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()


def environment(servers: HostServers, ports: Mapping[str, int], redis: str) -> dict[str, str]:
    """The operator's .env.production, filled with the host servers' addresses."""
    database_url = servers.postgres.dsn()
    jwt_secret = secrets.token_urlsafe(48)
    return {
        "XTYL_IMAGE_TAG": os.environ.get("XTYL_IMAGE_TAG", "latest"),
        "XTYL_IMAGE_PREFIX": os.environ.get("XTYL_IMAGE_PREFIX", ""),
        "REDIS_IMAGE": redis,
        "REDIS_PORT": str(ports["redis"]),
        **{f"{name.upper()}_PORT": str(ports[name]) for name in HTTP_SERVICES},
        # the workers' health listeners (HEALTH_PORT): all on the host network, so one each
        **{health_port_variable(name): str(ports[name]) for name in WORKERS},
        "DATABASE_URL": database_url,
        "MIGRATIONS_DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "SUPABASE_URL": servers.auth_url,
        "SUPABASE_JWT_SECRET": jwt_secret,
        "SUPABASE_ANON_KEY": mint_anon_key(jwt_secret),
        "INTERNAL_JWT_SECRET": secrets.token_hex(32),
        "CORS_ORIGINS": "https://app.example.com",
        "STORAGE_URL": f"http://127.0.0.1:{ports['storage']}",
        "RAG_URL": f"http://127.0.0.1:{ports['rag']}",
        "NOTIFY_URL": f"http://127.0.0.1:{ports['notify']}",
        "R2_ENDPOINT": servers.s3.endpoint,
        "R2_ACCESS_KEY": servers.s3.access_key,
        "R2_SECRET_KEY": servers.s3.secret_key,
        "R2_BUCKET": servers.s3.bucket,
        "BREVO_API_KEY": "xkeysib-deploy-check",
        "BREVO_API_URL": servers.brevo_url,
        "EMAIL_SENDER": "xtyl <no-reply@example.com>",
        "SEND_EMAIL_HOOK_SECRET": "v1,whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "APP_URL": "https://app.example.com",
        "PUBLIC_API_URL": f"http://127.0.0.1:{ports['gateway']}",
        "EMAIL_HASH_PEPPER": secrets.token_hex(32),
        "LOG_JSON": "true",
    }


def health_port_variable(worker: str) -> str:
    """``rag-worker`` -> ``RAG_WORKER_HEALTH_PORT`` (docker-compose.deploy-check.yml)."""
    return worker.upper().replace("-", "_") + "_HEALTH_PORT"


# ------------------------------------------------------------------------------------- checks
def prod_limits() -> dict[str, tuple[int, int]]:
    """service -> (memory bytes, nano CPUs) from the prod file's deploy.resources.limits."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    limits: dict[str, tuple[int, int]] = {}
    for name, service in yaml.safe_load(PROD.read_text())["services"].items():
        limit = service.get("deploy", {}).get("resources", {}).get("limits")
        if limit:
            memory = str(limit["memory"])
            number = int(memory[:-1]) * units[memory[-1].upper()]
            limits[name] = (number, int(float(limit["cpus"]) * 1e9))
    return limits


def grace_periods() -> dict[str, float]:
    services = yaml.safe_load(PROD.read_text())["services"]
    return {
        name: float(str(service.get("stop_grace_period", "10s")).rstrip("s"))
        for name, service in services.items()
    }


def compose_up(engine: Engine, after_migrate: Callable[[], None]) -> None:
    """``compose up --detach``, which returns once the gateway started (after the services
    turned healthy); ``after_migrate`` runs as soon as the migrate container has exited, the
    moment the Auth's tables can exist, so it is up about when the services are."""
    up = subprocess.Popen(  # noqa: S603 - our own argv
        engine.compose_cmd("up", "--detach", "--no-build"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **engine.env},
    )
    try:

        def migrate_exited() -> bool:
            ids = engine.run(engine.compose_cmd("ps", "--all", "-q", "migrate")).stdout.split()
            if not ids:
                return up.poll() is not None  # up failed before creating it
            state = json.loads(engine.run([engine.docker, "inspect", ids[0]]).stdout)[0]["State"]
            return state["Status"] == "exited"

        wait_for("the migrate container to exit", migrate_exited, 300)
        if up.poll() is None or up.returncode == 0:
            after_migrate()
        output, _ = up.communicate(timeout=600)
    finally:
        if up.poll() is None:
            up.kill()
    if up.returncode != 0:
        raise CheckFailed(f"compose up failed:\n{output[-3000:]}")


def check_started_in_order(engine: Engine) -> None:
    migrate = engine.container("migrate")
    state = migrate["State"]
    if state["Status"] != "exited" or state["ExitCode"] != 0:
        logs = engine.run(engine.compose_cmd("logs", "--no-color", "migrate")).stdout[-3000:]
        raise CheckFailed(f"migrate: {state['Status']} with code {state['ExitCode']}\n{logs}")
    finished = state["FinishedAt"]
    for service in OURS:
        started = engine.container(service)["State"]["StartedAt"]
        if started < finished:  # RFC 3339 UTC strings of one engine compare as times
            raise CheckFailed(f"{service} started at {started}, before migrate ended {finished}")
    say(f"migrate exited 0 at {finished}; every service started after it")


def wait_healthy(engine: Engine) -> None:
    def states() -> bool:
        pending = []
        for service in OURS:
            state = engine.container(service)["State"]
            if state["Status"] in {"exited", "dead"} or state.get("Restarting"):
                logs = engine.run(engine.compose_cmd("logs", "--no-color", service)).stdout
                raise CheckFailed(
                    f"{service} {state['Status']} ({state['ExitCode']}):\n{logs[-3000:]}"
                )
            health = state.get("Health", {}).get("Status")
            if service in HTTP_SERVICES and health != "healthy":
                pending.append(f"{service}={health}")
        return not pending

    started = time.monotonic()
    wait_for("every service healthy", states, HEALTHY_TIMEOUT_S, interval=1.0)
    say(f"every service healthy (/readyz) in {time.monotonic() - started:.0f} s; workers running")


def check_hardening(engine: Engine) -> None:
    limits = prod_limits()
    for service in OURS:
        info = engine.container(service)
        cid = info["Id"]
        uid = engine.run(
            [
                engine.docker,
                "exec",
                cid,
                "python",
                "-c",
                "import os; print(os.getuid(), os.getgid())",
            ]
        ).stdout.split()
        if uid != [str(UID), str(UID)]:
            raise CheckFailed(f"{service} runs as uid/gid {uid}, not {UID}")
        if not info["HostConfig"]["ReadonlyRootfs"]:
            raise CheckFailed(f"{service}: root filesystem is writable (read_only lost)")
        write = engine.run(
            [engine.docker, "exec", cid, "python", "-c", "open('/app/probe', 'w')"], check=False
        )
        if write.returncode == 0 or "Read-only file system" not in write.stderr:
            raise CheckFailed(f"{service}: could write /app ({write.stderr.strip()[-200:]})")
        tmp = engine.run(
            [engine.docker, "exec", cid, "python", "-c", "open('/tmp/probe', 'w').write('x')"],
            check=False,
        )
        if tmp.returncode != 0:
            raise CheckFailed(f"{service}: /tmp is not writable: {tmp.stderr.strip()[-200:]}")
        memory, cpus = limits[service]
        host = info["HostConfig"]
        if (host["Memory"], host["NanoCpus"]) != (memory, cpus):
            raise CheckFailed(
                f"{service}: limits memory={host['Memory']} cpus={host['NanoCpus']},"
                f" the prod file says {memory} and {cpus}"
            )
        if "ALL" not in (host.get("CapDrop") or []):
            raise CheckFailed(f"{service}: capabilities not dropped")
    say(f"every container: uid {UID}, read-only root (/tmp writable), limits as in the prod file")


def user_flow(servers: HostServers, env: Mapping[str, str], gateway: str) -> None:
    email = f"deploy-check-{uuid.uuid4().hex[:8]}@example.com"
    status, session = http(
        "POST",
        servers.auth_url + "/auth/v1/signup",
        body=json.dumps(
            {"email": email, "password": secrets.token_urlsafe(16), "data": {"full_name": "Ada"}}
        ).encode(),
        headers={"apikey": env["SUPABASE_ANON_KEY"], "Content-Type": "application/json"},
    )
    if status != 200 or not isinstance(session, dict) or "access_token" not in session:
        raise CheckFailed(f"sign-up through the local Auth: {status} {session!r}")
    auth = {"Authorization": f"Bearer {session['access_token']}"}
    say(f"signed up {email} through the local Auth")

    def me() -> Any:
        status, body = http("GET", gateway + "/v1/me", headers=auth)
        return body if status == 200 else None

    profile = wait_for("GET /v1/me", me, 30)
    if profile.get("email") != email:
        raise CheckFailed(f"/v1/me answered {profile!r}")

    marker = f"lighthouse{secrets.token_hex(3)}"
    pdf = make_pdf(
        [
            f"The {marker} keeper climbs the tower every evening at dusk.",
            "Chloroplasts turn light into sugar through photosynthesis.",
        ]
    )
    status, uploaded = http(
        "POST",
        gateway + "/v1/files?filename=keeper.pdf",
        body=pdf,
        headers={**auth, "Content-Type": "application/pdf"},
        timeout=60,
    )
    if status != 201 or not isinstance(uploaded, dict):
        raise CheckFailed(f"upload: {status} {uploaded!r}")
    file_id = uploaded["id"]
    say(f"uploaded a PDF through the gateway: file {file_id}")

    def indexed() -> Any:
        status, body = http("GET", gateway + "/v1/documents?limit=100", headers=auth)
        if status != 200:
            return None
        for item in body["items"]:
            if item.get("file_id") == file_id:
                if item["status"] == "failed":
                    raise CheckFailed(f"indexing failed: {item!r}")
                return item if item["status"] == "ready" else None
        return None

    started = time.monotonic()
    document = wait_for("the PDF's document ready", indexed, FLOW_TIMEOUT_S, interval=1.0)
    say(f"document {document['id']} ready in {time.monotonic() - started:.1f} s")

    status, found = http(
        "POST",
        gateway + "/v1/search",
        body=json.dumps({"query": f"who climbs the {marker} tower", "k": 3}).encode(),
        headers={**auth, "Content-Type": "application/json"},
        timeout=30,
    )
    if status != 200 or not any(marker in hit["snippet"] for hit in found["results"]):
        raise CheckFailed(f"search: {status} {found!r}")
    say(f"search found it ({found['mode']}, {len(found['results'])} hit(s))")

    def welcomed() -> Any:
        status, emails = http("GET", f"{servers.brevo_url}/_local/emails?to={email}")
        if status != 200:
            return None
        items = emails if isinstance(emails, list) else emails.get("emails", [])
        return [e for e in items if "welcome" in json.dumps(e).lower()]

    emails = wait_for(f"a welcome email to {email} at the Brevo stand-in", welcomed, 60)
    say(f"welcome email received: {emails[0].get('subject', '')!r}")


def log_errors(text: str) -> list[str]:
    """Lines of our containers' logs that report an error."""
    bad = []
    for raw in text.splitlines():
        _, _, line = raw.partition("| ")
        line = line.strip() or raw
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            level = str(record.get("level", record.get("levelname", ""))).lower()
            if level in {"error", "critical", "fatal", "exception"} or "exception" in record:
                bad.append(raw)
        elif any(word in line for word in ("Traceback", "[ERROR]", "[CRITICAL]", " ERROR ", "[E:")):
            bad.append(raw)
    return bad


def stop_and_check(engine: Engine, logs_to: Path | None) -> None:
    graces = grace_periods()
    started = time.time()
    engine.run(engine.compose_cmd("stop"), timeout=max(graces.values()) + 60)
    took = time.time() - started
    for service in (*OURS, "redis"):
        state = engine.container(service)["State"]
        if state["ExitCode"] != 0 or state.get("OOMKilled"):
            raise CheckFailed(f"{service} exited with {state['ExitCode']} on SIGTERM")
    if took > min(graces[s] for s in OURS):
        raise CheckFailed(f"stopping took {took:.0f} s, past the grace period")
    logs = engine.run(engine.compose_cmd("logs", "--no-color", *OURS, "migrate")).stdout
    if logs_to is not None:
        logs_to.write_text(logs)
        say(f"logs of every container: {logs_to}")
    errors = log_errors(logs)
    if errors:
        raise CheckFailed("errors in the logs:\n" + "\n".join(errors[:20]))
    lines = len(logs.splitlines())
    say(
        f"SIGTERM: every container stopped with status 0 in {took:.1f} s;"
        f" no error in {lines} log lines"
    )


# ------------------------------------------------------------------------------------- main
@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xtyl-deploy-check-"))
    path.chmod(0o755)  # PostgreSQL runs under its own account
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(keep: bool, logs_to: Path | None) -> None:
    started = time.monotonic()
    docker = docker_client()
    compose = compose_command(docker)
    redis = redis_image(docker)
    with work_dir() as work:
        servers = HostServers.create(work)
        ports = {name: free_port() for name in ("redis", *HTTP_SERVICES, *WORKERS)}
        env = environment(servers, ports, redis)
        env_file = work / "env.production"
        engine = Engine(docker, compose, env_file)
        failed = False
        try:
            servers.start()
            env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
            say(f"host servers ready: postgres, s3, brevo ({time.monotonic() - started:.0f} s)")
            engine.run(engine.compose_cmd("config", "--quiet"))
            gateway = f"http://127.0.0.1:{ports['gateway']}"
            compose_up(engine, lambda: servers.start_auth(env, gateway))
            check_started_in_order(engine)
            wait_healthy(engine)
            check_hardening(engine)
            user_flow(servers, env, gateway)
            stop_and_check(engine, logs_to)
        except BaseException:
            failed = True
            with contextlib.suppress(Exception):
                logs = engine.run(engine.compose_cmd("logs", "--no-color", "--tail", "40"))
                print(logs.stdout[-8000:], file=sys.stderr)
            raise
        finally:
            if keep and failed:
                say(f"--keep: the stack stays up ({' '.join(engine.compose_cmd('ps'))})")
            else:
                engine.run(
                    engine.compose_cmd("down", "--volumes", "--remove-orphans", "--timeout", "5"),
                    check=False,
                    timeout=120,
                )
                servers.stop()
    say(f"passed in {time.monotonic() - started:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compose/deploy_check.py", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the stack up after a failure")
    parser.add_argument("--logs", type=Path, help="write every container's log to this file")
    args = parser.parse_args(argv)
    try:
        run(args.keep, args.logs)
    except CheckFailed as exc:
        print(f"deploy-check: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
