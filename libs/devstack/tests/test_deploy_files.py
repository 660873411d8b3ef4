"""The deployment files agree with the code: docker/, compose/, k8s/ (no Docker, no cluster).

What a deploy would otherwise find out at start-up is checked here from the files themselves:
each process of compose prod and of the Kubernetes base gets an environment that its settings
Structs load (required variables present, values well formed), every command is a console
script of the package its image installs, probes and ports match what the services serve, the
Dockerfile installs real workspace packages, and every variable is documented in
``compose/.env.production.example``. Structural validation of the manifests against the
Kubernetes schemas, and of the compose files against the compose spec, is in docs/deploy.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from xtyl_common.events.contracts import DOMAINS, stream_key
from xtyl_common.events.settings import ENV_PREFIX as EVENTS_PREFIX
from xtyl_common.events.settings import EventSettings
from xtyl_common.settings import SettingsError, load_settings
from xtyl_common.tracing import DEPLOYMENT_VARIABLES
from xtyl_gateway.settings import GatewaySettings
from xtyl_notify.settings import NotifySettings
from xtyl_rag.settings import RagSettings
from xtyl_storage.settings import StorageSettings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_PROD = COMPOSE_DIR / "docker-compose.prod.yml"
COMPOSE_DEV = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.production.example"
K8S = ROOT / "k8s"
K8S_BASE = K8S / "base"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

PORT = 8000
MIGRATE_COMMAND = ["python", "-m", "xtyl_common.migrate"]
#: Fixed by the container definitions, not configured per deployment.
CONTAINER_FIXED = {"HOST", "PORT"}
#: Read by the migration runner (not a settings Struct).
MIGRATE_VARIABLES = {"MIGRATIONS_DATABASE_URL"}

Struct = type[msgspec.Struct]
#: Console script -> (the package that declares it, the Structs its process reads, prefix each).
PROCESSES: dict[str, tuple[str, tuple[tuple[Struct, str], ...]]] = {
    "xtyl-gateway": ("xtyl-gateway", ((GatewaySettings, ""), (EventSettings, EVENTS_PREFIX))),
    "xtyl-storage": ("xtyl-storage", ((StorageSettings, ""), (EventSettings, EVENTS_PREFIX))),
    "xtyl-storage-worker": (
        "xtyl-storage",
        ((StorageSettings, ""), (EventSettings, EVENTS_PREFIX)),
    ),
    "xtyl-rag": ("xtyl-rag", ((RagSettings, ""), (EventSettings, EVENTS_PREFIX))),
    "xtyl-rag-worker": ("xtyl-rag", ((RagSettings, ""), (EventSettings, EVENTS_PREFIX))),
    "xtyl-notify": ("xtyl-notify", ((NotifySettings, ""), (EventSettings, EVENTS_PREFIX))),
    "xtyl-notify-worker": ("xtyl-notify", ((NotifySettings, ""), (EventSettings, EVENTS_PREFIX))),
}
HTTP_SCRIPTS = {"xtyl-gateway", "xtyl-storage", "xtyl-rag", "xtyl-notify"}


# --------------------------------------------------------------------------------- helpers
def read_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{path}: not a mapping"
    return loaded


def read_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (kustomize and compose env files); comments and blanks skipped."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value
    return values


def variables_read(structs: tuple[tuple[Struct, str], ...]) -> set[str]:
    return {
        f"{prefix}{field.name}".upper()
        for cls, prefix in structs
        for field in msgspec.structs.fields(cls)
    }


def every_variable() -> set[str]:
    return {v for _, structs in PROCESSES.values() for v in variables_read(structs)}


def load_all(script: str, environ: Mapping[str, str], where: str) -> None:
    for cls, prefix in PROCESSES[script][1]:
        try:
            load_settings(cls, environ=environ, prefix=prefix)
        except SettingsError as exc:
            pytest.fail(f"{where}: {script} would stop with: configuration error: {exc}")


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` against ``env``."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2) or "", match.group(3) or ""
        current = env.get(name)
        unset = current is None or (operator.startswith(":") and current == "")
        if operator.endswith("?") and unset:
            pytest.fail(f"compose needs {name} ({argument}), which the env example does not set")
        if operator.endswith("-") and unset:
            return argument
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), "commands are exec-form lists"
    return [str(part) for part in command]


def workspace_packages() -> dict[str, dict[str, Any]]:
    """Workspace member name -> its pyproject.toml ``[project]`` table."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    members: list[str] = root["tool"]["uv"]["workspace"]["members"]
    packages: dict[str, dict[str, Any]] = {}
    for member in members:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text(encoding="utf-8"))
        packages[project["project"]["name"]] = project["project"]
    return packages


def scripts_of(package: str) -> set[str]:
    return set(workspace_packages()[package].get("scripts", {}))


def k8s_base_objects() -> list[dict[str, Any]]:
    kustomization = read_yaml(K8S_BASE / "kustomization.yaml")
    return [
        doc for name in kustomization["resources"] for doc in read_yaml_documents(K8S_BASE / name)
    ]


def deployments() -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in k8s_base_objects():
        if obj["kind"] == "Deployment":
            yield obj["metadata"]["name"], obj


def container_env(container: dict[str, Any], config: Mapping[str, str]) -> dict[str, str]:
    """The environment a container gets from the base ConfigMap and the example Secret."""
    secrets = read_env_file(K8S_BASE / "secrets.env.example")
    sources = {"xtyl-config": config, "xtyl-secrets": secrets}
    env: dict[str, str] = {}
    for item in container.get("envFrom", []):
        env.update(sources[item["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"]["configMapKeyRef"]
        source = sources[ref["name"]]
        if ref["key"] in source:
            env[item["name"]] = source[ref["key"]]
        else:
            assert ref.get("optional"), f"{ref['name']} has no key {ref['key']}"
    return env


# --------------------------------------------------------------------------------- all files
def test_every_yaml_file_parses() -> None:
    files = [*COMPOSE_DIR.glob("*.yml"), *K8S.rglob("*.yaml")]
    assert len(files) > 10
    for path in files:
        assert read_yaml_documents(path), f"{path} is empty"


def test_env_example_documents_every_variable_with_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    documented: dict[str, int] = {}
    for number, line in enumerate(lines):
        match = re.match(r"^#?\s?([A-Z][A-Z0-9_]*)=", line)
        if match:
            documented.setdefault(match.group(1), number)
    compose_variables = set(_INTERPOLATION.findall(COMPOSE_PROD.read_text(encoding="utf-8")))
    wanted = every_variable() | MIGRATE_VARIABLES | {name for name, _, _ in compose_variables}
    missing = sorted(wanted - set(documented))
    assert not missing, f"add to compose/.env.production.example: {missing}"
    variable_line = re.compile(r"^#?\s?[A-Z][A-Z0-9_]*=")
    for name, number in documented.items():
        # walk up through a group of related variables to the comment that explains them
        above = number - 1
        while above >= 0 and variable_line.match(lines[above]):
            above -= 1
        prose = lines[above] if above >= 0 else ""
        assert prose.startswith("# "), f"{name} has no comment above it"
        assert "----" not in prose, f"{name} has no comment above it"


# --------------------------------------------------------------------------------- compose
def test_compose_prod_holds_only_stateless_services_redis_and_the_migration() -> None:
    services = read_yaml(COMPOSE_PROD)["services"]
    commands = {name: compose_command(s) for name, s in services.items() if name != "redis"}
    assert services["redis"]["image"] == "redis:7"
    assert commands.pop("migrate") == MIGRATE_COMMAND
    assert {c[0] for c in commands.values()} == set(PROCESSES)


def test_compose_prod_gives_each_process_exactly_what_it_reads_and_it_loads() -> None:
    example = read_env_file(ENV_EXAMPLE)
    for name, service in read_yaml(COMPOSE_PROD)["services"].items():
        if name in {"redis", "migrate"}:
            continue
        script = compose_command(service)[0]
        passed = {k: interpolate(str(v), example) for k, v in service["environment"].items()}
        reads = variables_read(PROCESSES[script][1]) - CONTAINER_FIXED
        reads |= set(DEPLOYMENT_VARIABLES)  # OpenTelemetry's, read by the SDK
        assert set(passed) == reads, (
            f"compose prod `{name}`: not passed {sorted(reads - set(passed))},"
            f" passed but never read {sorted(set(passed) - reads)}"
        )
        load_all(script, passed, f"compose prod `{name}`")
    migrate = read_yaml(COMPOSE_PROD)["services"]["migrate"]["environment"]
    assert interpolate(migrate["MIGRATIONS_DATABASE_URL"], example).endswith(
        ":5432/postgres?sslmode=require"
    ), "migrations need a session connection (port 5432)"


def test_compose_dev_environment_loads_for_every_process() -> None:
    for name, service in read_yaml(COMPOSE_DEV)["services"].items():
        command = service.get("command")
        if not command or command[0] not in PROCESSES:
            continue
        env = {k: interpolate(str(v), {}) for k, v in service["environment"].items()}
        load_all(command[0], env, f"compose dev `{name}`")


@pytest.mark.parametrize("path", [COMPOSE_PROD, COMPOSE_DEV], ids=lambda p: p.name)
def test_compose_order_health_and_grace(path: Path) -> None:
    services = read_yaml(path)["services"]
    grace = EventSettings().grace_period_s
    for name, service in services.items():
        command = service.get("command") or [""]
        if command[0] not in PROCESSES:
            continue
        depends = service["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert int(str(service["stop_grace_period"]).rstrip("s")) > grace + 10, name
        if command[0] in HTTP_SCRIPTS:
            probe = " ".join(service["healthcheck"]["test"])
            assert f"http://127.0.0.1:{PORT}/readyz" in probe, name
            for other, condition in depends.items():
                if other in services and "healthcheck" in services[other]:
                    assert condition["condition"] == "service_healthy", (name, other)


def test_compose_builds_name_real_images() -> None:
    choices = dockerfile_service_choices()
    for path in (COMPOSE_PROD, COMPOSE_DEV):
        for name, service in read_yaml(path)["services"].items():
            if "build" not in service:
                continue
            build = service["build"]
            assert build["context"] == "..", name
            assert build["dockerfile"] == "docker/Dockerfile", name
            target = build["args"]["SERVICE"]
            assert target in choices, f"{path.name} `{name}`: SERVICE={target}"
            assert f"xtyl-{target}:" in service["image"], f"{path.name} `{name}`: image name"


# --------------------------------------------------------------------------------- commands
def image_package(image: str) -> str | None:
    """``ghcr.io/org/xtyl-rag:1.0`` -> ``xtyl-rag``; ``None`` for the migrate image."""
    match = re.search(r"xtyl-(gateway|storage|rag|notify|migrate)\b", image)
    assert match, f"not one of our images: {image}"
    return None if match.group(1) == "migrate" else match.group(0)


def commands_in_deploy_files() -> Iterator[tuple[str, str, list[str]]]:
    """(where, image, command) of every container of ours in compose and k8s."""
    for path in (COMPOSE_PROD, COMPOSE_DEV):
        for name, service in read_yaml(path)["services"].items():
            if "xtyl-" in str(service.get("image", "")) and "command" in service:
                command = compose_command(service)
                if command[0] in PROCESSES or command == MIGRATE_COMMAND:
                    yield f"{path.name} `{name}`", service["image"], command
    for obj in k8s_base_objects():
        if obj["kind"] in {"Deployment", "Job"}:
            for container in obj["spec"]["template"]["spec"]["containers"]:
                yield f"k8s {obj['metadata']['name']}", container["image"], container["command"]


def test_every_command_is_a_console_script_of_the_package_in_its_image() -> None:
    seen: set[str] = set()
    for where, image, command in commands_in_deploy_files():
        package = image_package(image)
        if package is None:
            assert command == MIGRATE_COMMAND, where
            continue
        assert len(command) == 1, f"{where}: run the console script itself: {command}"
        assert command[0] in scripts_of(package), (
            f"{where}: `{command[0]}` is not a [project.scripts] entry of {package}"
        )
        assert PROCESSES[command[0]][0] == package, where
        seen.add(command[0])
    assert seen == set(PROCESSES), f"never deployed: {sorted(set(PROCESSES) - seen)}"


# --------------------------------------------------------------------------------- dockerfile
def dockerfile_service_choices() -> dict[str, list[str]]:
    """SERVICE value -> the packages its ``uv sync --package`` installs (from the case block)."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    block = re.search(r'case "\$\{SERVICE\}" in(.*?)esac', text, re.S)
    assert block, "the Dockerfile's SERVICE case block is gone"
    choices: dict[str, list[str]] = {}
    for names, packages in re.findall(r"([a-z|]+)\) echo \"([^\"]*)\"", block.group(1)):
        for name in names.split("|"):
            found = re.findall(r"--package (\S+)", packages.replace("${SERVICE}", name))
            choices[name] = found
    return choices


def test_dockerfile_installs_real_workspace_packages() -> None:
    packages = workspace_packages()
    choices = dockerfile_service_choices()
    for service in ("gateway", "storage", "rag", "notify"):
        assert choices[service] == [f"xtyl-{service}"]
    for installed in choices.values():
        assert set(installed) <= set(packages), f"not workspace members: {installed}"
    # the migrate image must hold every package that ships migrations (entry points)
    with_migrations = {
        name
        for name, project in packages.items()
        if "xtyl.migrations" in project.get("entry-points", {}) and name != "xtyl-common"
    }
    assert set(choices["migrate"]) == with_migrations
    assert "xtyl-devstack" not in {p for ps in choices.values() for p in ps}


def test_dockerfile_follows_the_conventions() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    uv_version = re.search(r"^UV_VERSION := (\S+)", makefile, re.M)
    assert uv_version
    assert f"ghcr.io/astral-sh/uv:{uv_version.group(1)}" in text, "uv image != Makefile's uv"
    syncs = re.findall(r"uv sync ([^\n]*)", text)
    assert len(syncs) == 2
    assert all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert "--no-install-workspace" in syncs[0], "dependencies first, in a layer of their own"
    assert "--no-editable" in syncs[1], "the venv must not point back at the sources"
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.findall(r"^COPY (.*)$", final, re.M) == ["--from=builder /app/.venv /app/.venv"]
    user = re.search(r"^USER (\d+)(?::(\d+))?$", final, re.M)
    assert user, "the final image sets a numeric USER"
    assert int(user.group(1)) != 0, "the final image runs as a non-root user"
    assert re.search(rf"^EXPOSE {PORT}$", final, re.M)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored[ignored.index("*") + 1 :][:4] == [
        "!pyproject.toml",
        "!uv.lock",
        "!libs/",
        "!services/",
    ], ".dockerignore allows only what the image needs"


# --------------------------------------------------------------------------------- kubernetes
def test_k8s_every_process_loads_its_settings_from_config_and_secret() -> None:
    config = read_env_file(K8S_BASE / "config.env")
    for name, deployment in deployments():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        load_all(container["command"][0], container_env(container, config), f"k8s {name}")
    job = next(o for o in k8s_base_objects() if o["kind"] == "Job")
    env = container_env(job["spec"]["template"]["spec"]["containers"][0], config)
    assert env["MIGRATIONS_DATABASE_URL"].endswith(":5432/postgres?sslmode=require")
    assert "DATABASE_URL" not in env, "the migrate Job uses the session connection only"


def test_k8s_http_services_probe_and_serve_on_the_service_port() -> None:
    objects = k8s_base_objects()
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    config = read_env_file(K8S_BASE / "config.env")
    for name, deployment in deployments():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if container["command"][0] not in HTTP_SCRIPTS:
            assert "ports" not in container, name
            assert name not in services, name
            continue
        assert container["ports"] == [{"name": "http", "containerPort": PORT}], name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        service = services[name]["spec"]
        assert service["selector"] == deployment["spec"]["selector"]["matchLabels"], name
        assert service["ports"] == [{"name": "http", "port": PORT, "targetPort": "http"}]
    for variable, upstream in (
        ("STORAGE_URL", "storage"),
        ("RAG_URL", "rag"),
        ("NOTIFY_URL", "notify"),
    ):
        assert config[variable] == f"http://{upstream}:{PORT}"


def test_k8s_pods_are_hardened_sized_and_outlive_the_worker_grace() -> None:
    grace = float(read_env_file(K8S_BASE / "config.env").get("EVENTS_GRACE_PERIOD_S", "25"))
    pods = [(n, d["spec"]["template"]["spec"]) for n, d in deployments()]
    pods += [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in k8s_base_objects()
        if o["kind"] == "Job"
    ]
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
        if pod.get("restartPolicy") != "Never":
            assert pod["terminationGracePeriodSeconds"] > grace + 10, name


def test_k8s_scaling_disruption_and_network_rules_cover_every_deployment() -> None:
    objects = k8s_base_objects()
    names = {name for name, _ in deployments()}
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    (hpa,) = by_kind["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert "replicas" not in dict(deployments())["gateway"]["spec"], "the HPA owns them"
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in by_kind["PodDisruptionBudget"]
    }
    assert pdbs == names
    policies = by_kind["NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies)
    from_outside = [
        p["spec"]["podSelector"]
        for p in policies
        for rule in p["spec"].get("ingress", [])
        if any("namespaceSelector" in source for source in rule["from"])
    ]
    assert from_outside == [{"matchLabels": {"app.kubernetes.io/name": "gateway"}}]
    (ingress,) = by_kind["Ingress"]
    backends = {
        p["backend"]["service"]["name"]
        for r in ingress["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert backends == {"gateway"}


def test_keda_scalers_read_the_streams_and_groups_the_workers_consume() -> None:
    from xtyl_notify.worker import GROUP as NOTIFY_GROUP  # worker modules import a lot
    from xtyl_rag.worker import GROUP as RAG_GROUP
    from xtyl_storage.worker import GROUP as STORAGE_GROUP

    groups = {
        "storage-worker": STORAGE_GROUP,
        "rag-worker": RAG_GROUP,
        "notify-worker": NOTIFY_GROUP,
    }
    streams = {stream_key(domain) for domain in DOMAINS}
    scaled = [
        d
        for d in read_yaml_documents(K8S / "components" / "keda-workers" / "scaledobjects.yaml")
        if d["kind"] == "ScaledObject"
    ]
    assert {d["spec"]["scaleTargetRef"]["name"] for d in scaled} == set(groups)
    for obj in scaled:
        target = obj["spec"]["scaleTargetRef"]["name"]
        assert obj["spec"]["minReplicaCount"] >= 1, f"{target} runs relays and crons"
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert int(meta["lagCount"]) > 0
            assert meta["stream"] in streams
            assert meta["consumerGroup"] == groups[target]
    rag = next(d for d in scaled if d["metadata"]["name"] == "rag-worker")
    assert rag["spec"]["triggers"][0]["metadata"]["stream"] == stream_key("files")
