"""The service table of ``up``: what runs, on which port, with which environment."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xtyl_devstack.auth.config import find_config
from xtyl_devstack.errors import DevstackError
from xtyl_devstack.ports import HOST, free_port
from xtyl_devstack.stack import StackInfo


@dataclass(frozen=True, slots=True)
class ServiceDef:
    """A service of the table: its name, module, default port and the variable overriding it."""

    name: str
    module: str
    default_port: int
    port_variable: str


#: The local Supabase Auth (GoTrue's API over the embedded Postgres), not a service of ours.
AUTH = ServiceDef("auth", "xtyl_devstack.auth", 8010, "AUTH_PORT")
#: Where the local Auth sends auth emails: notify's Send Email Hook, through the gateway.
SEND_EMAIL_HOOK_PATH = "/webhooks/auth/send-email"
#: The local Brevo stand-in: keeps every email it is sent (``/_local/emails``, emails.jsonl).
BREVO = ServiceDef("brevo", "xtyl_devstack.brevo", 8011, "BREVO_PORT")

#: arq workers started when their service is installed: (name, module). Each serves its
#: health listener (``/livez``, ``/readyz``, ``/metrics``) on a free port of its own
#: (``HEALTH_PORT``): two workers on one host cannot share the production default, 8081.
WORKERS: tuple[tuple[str, str], ...] = (
    ("rag-worker", "xtyl_rag.worker"),
    ("notify-worker", "xtyl_notify.worker"),
    ("storage-worker", "xtyl_storage.worker"),
)

SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("gateway", "xtyl_gateway", 8000, "GATEWAY_PORT"),
    ServiceDef("storage", "xtyl_storage", 8001, "STORAGE_PORT"),
    ServiceDef("rag", "xtyl_rag", 8002, "RAG_PORT"),
    ServiceDef("notify", "xtyl_notify", 8003, "NOTIFY_PORT"),
)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process to run: ready when ``GET ready_url`` answers 200 (``None``: when started)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=lambda: {})
    ready_url: str | None = None
    #: A worker's health listener (``<url>/readyz``, ``<url>/metrics``); not waited for.
    health_url: str | None = None

    @property
    def base_url(self) -> str | None:
        if self.ready_url is None:
            return None
        return self.ready_url.rsplit("/", 1)[0]


SpecsFactory = Callable[[StackInfo, Mapping[str, str]], list[ProcessSpec]]


def service_ports(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Each service's port: its default, or ``<NAME>_PORT`` from the environment."""
    ports: dict[str, int] = {}
    for service in (*SERVICES, AUTH, BREVO):
        raw = environ.get(service.port_variable, "").strip()
        try:
            ports[service.name] = int(raw) if raw else service.default_port
        except ValueError:
            raise DevstackError(f"{service.port_variable}={raw!r} is not a port number") from None
    return ports


def stack_environment(
    info: StackInfo,
    ports: Mapping[str, int],
    internal_secret: str,
    auth_secret: str,
    *,
    auth_keys: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What every service (and ``env``) gets: the servers, the other services, the secrets.

    ``SUPABASE_URL`` is the local Auth, so services fetch ES256 keys from its JWKS exactly as
    they do from a Supabase project; ``SUPABASE_JWT_SECRET`` is the local project's legacy HS256
    secret, so tokens minted with it work too (both paths, as in production). ``auth_keys``:
    ``SUPABASE_ANON_KEY``, ``SUPABASE_SERVICE_ROLE_KEY`` and ``SEND_EMAIL_HOOK_SECRET``.
    """

    def url(name: str) -> str:
        return f"http://{HOST}:{ports[name]}"

    return {
        "DATABASE_URL": info.database_url,
        "REDIS_URL": info.redis_url,
        "R2_ENDPOINT": info.s3_endpoint,
        "R2_ACCESS_KEY": info.s3_access_key,
        "R2_SECRET_KEY": info.s3_secret_key,
        "R2_BUCKET": info.s3_bucket,
        "R2_PUBLIC_URL": "",
        "HOST": HOST,
        "GATEWAY_URL": url("gateway"),
        # where the links in emails point (notify's one-click unsubscribe): the gateway
        "PUBLIC_API_URL": url("gateway"),
        "STORAGE_URL": url("storage"),
        "RAG_URL": url("rag"),
        "NOTIFY_URL": url("notify"),
        "INTERNAL_JWT_SECRET": internal_secret,
        "SUPABASE_JWT_SECRET": auth_secret,
        "SUPABASE_URL": url("auth"),
        "BREVO_API_URL": url("brevo"),
        "BREVO_API_KEY": "local-brevo-key",
        "APP_URL": "http://localhost:3000",
        "XTYL_ENV": "local",
        "LOG_LEVEL": "info",
        **(auth_keys or {}),
    }


def default_services(info: StackInfo, common_env: Mapping[str, str]) -> list[ProcessSpec]:
    """The local Auth (configured by ``supabase/config.toml``, its emails through the
    gateway's Send Email Hook route), the Brevo stand-in, the four services (``python -m
    xtyl_<name>`` each on its port) and the arq workers of the services that have one."""
    ports = service_ports()
    issuer = ProcessSpec(
        name=AUTH.name,
        argv=[
            sys.executable,
            "-m",
            AUTH.module,
            "--key-dir",
            str(Path(info.data_dir) / "auth"),
            "--port",
            str(ports[AUTH.name]),
            "--config",
            str(find_config()),
            "--site-url",
            common_env.get("APP_URL", "http://localhost:3000"),
            "--hook-uri",
            f"http://{HOST}:{ports['gateway']}{SEND_EMAIL_HOOK_PATH}",
        ],
        env=common_env,
        ready_url=f"http://{HOST}:{ports[AUTH.name]}/auth/v1/health",
    )
    brevo = ProcessSpec(
        name=BREVO.name,
        argv=[
            sys.executable,
            "-m",
            BREVO.module,
            "--port",
            str(ports[BREVO.name]),
            "--data-dir",
            str(Path(info.data_dir) / "brevo"),
        ],
        env=common_env,
        ready_url=f"http://{HOST}:{ports[BREVO.name]}/_local/emails",
    )
    services = [
        ProcessSpec(
            name=service.name,
            argv=[sys.executable, "-m", service.module],
            env={**common_env, "PORT": str(ports[service.name])},
            ready_url=f"http://{HOST}:{ports[service.name]}/readyz",
        )
        for service in SERVICES
    ]
    workers = [
        worker_spec(name, module, common_env, free_port())
        for name, module in WORKERS
        if importlib.util.find_spec(module.rpartition(".")[0]) is not None
        and importlib.util.find_spec(module) is not None
    ]
    return [issuer, brevo, *services, *workers]


def worker_spec(
    name: str, module: str, common_env: Mapping[str, str], health_port: int
) -> ProcessSpec:
    """A worker (``python -m module``) with its health listener on ``health_port``."""
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", module],
        env={**common_env, "HOST": HOST, "HEALTH_PORT": str(health_port)},
        health_url=f"http://{HOST}:{health_port}",
    )
