"""``make deploy-lint``: every Kubernetes overlay rendered by a real kustomize and checked, and
the Dockerfile linted. Runs with the tools of ``make deploy-tools`` (.tools/deploy); needs no
cluster and no Docker engine.

1. render: each overlay (``k8s/overlays/*``) with ``kubectl kustomize`` (kustomize v5 inside
   kubectl) or a ``kustomize`` binary, from a copy of k8s/ in which each overlay's git-ignored
   ``secrets.env`` is the base's ``secrets.env.example``;
2. schemas: every rendered object against the OpenAPI schemas of Kubernetes
   ``KUBERNETES_VERSION`` (kubernetes-validate, strict: unknown fields fail); KEDA's
   ScaledObjects against the models generated from KEDA's CRDs (cloudcoil-models-keda
   2.16.1.0 = KEDA 2.16.1), also refusing fields those CRDs do not have; the Prometheus
   Operator's ServiceMonitor, PodMonitor and PrometheusRule against the schemas of its CRDs,
   vendored unmodified under k8s/schemas/ (CRD_SCHEMAS), strict the same way;
3. policy: checkov's Kubernetes checks that matter here (non-root, high UID, read-only root,
   no privilege escalation, dropped capabilities, seccomp, no service-account token, requests
   and limits, liveness and readiness probes; see POLICY_CHECKS) must all pass; and our own:
   every HTTP probe asks a path the services serve (the routes of xtyl_common.health), every
   namespace has a default-deny ingress NetworkPolicy, and every ServiceMonitor/PodMonitor
   scrapes a path the services serve on a port its Services/pods declare;
4. hadolint on docker/Dockerfile.

``--self-test`` then breaks rendered copies (a probe path that does not exist, a missing
runAsNonRoot, no default-deny policy, an unknown field, a monitor on an undeclared port, a
Dockerfile on ``:latest``) and fails unless each of them is caught.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HEALTH_ROUTES = ROOT / "libs" / "common" / "src" / "xtyl_common" / "health.py"
#: CustomResourceDefinitions whose objects are validated against their own schema: upstream's
#: files, unmodified (prometheus-operator-v0.93.0/: example/prometheus-operator-crd/ of
#: prometheus-operator v0.93.0, commit f8fafd475f3d132e239432ae6172de60a6cb6516). Not applied
#: by any overlay: the operator's install brings them to a cluster.
CRD_SCHEMAS = K8S / "schemas"
TOOLS = Path(sys.executable).parent
KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "1.37.0")

#: checkov checks that must pass on every rendered object they apply to.
POLICY_CHECKS = {
    "CKV_K8S_8": "liveness probe",
    "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_16": "not privileged",
    "CKV_K8S_20": "no privilege escalation",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_23": "no root containers (runAsNonRoot)",
    "CKV_K8S_28": "no NET_RAW",
    "CKV_K8S_37": "capabilities dropped",
    "CKV_K8S_38": "service account token mounted only where needed",
    "CKV_K8S_40": "high UID",
    "CKV_K8S_31": "seccomp RuntimeDefault",
}
# Not enforced, on purpose: CKV_K8S_43 (image digests: the overlays pin tags; pin digests in
# your CD if you want), CKV_K8S_35 (secrets as files: every setting is read from the
# environment), CKV_K8S_15 (imagePullPolicy Always: tags are immutable releases).


class Failure(Exception):
    """A check found a problem."""


def say(message: str) -> None:
    print(f"deploy-lint: {message}", flush=True)


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # noqa: S603


# ------------------------------------------------------------------------------------ render
def kustomize_command() -> list[str]:
    for candidate in (os.environ.get("KUSTOMIZE"), shutil.which("kustomize")):
        if candidate:
            return [candidate, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    raise Failure("no kustomize: install kubectl (kubectl kustomize) or a kustomize binary")


def kustomize_version(command: list[str]) -> str:
    if command[1] == "kustomize":
        out = run([command[0], "version", "--client"]).stdout
        found = re.search(r"Kustomize Version: (\S+)", out)
        return f"kubectl's kustomize {found.group(1) if found else '?'}"
    return "kustomize " + run([command[0], "version"]).stdout.strip()


@contextmanager
def k8s_copy() -> Iterator[Path]:
    """k8s/ in a temp dir, every overlay with the example secrets as its secrets.env."""
    with tempfile.TemporaryDirectory(prefix="xtyl-k8s-") as tmp:
        copy_dir = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy_dir, ignore=shutil.ignore_patterns("secrets.env", "*.py"))
        example = copy_dir / "base" / "secrets.env.example"
        for overlay in (copy_dir / "overlays").iterdir():
            kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
            if any(
                "secrets.env" in str(g.get("envs"))
                for g in kustomization.get("secretGenerator", [])
            ):
                shutil.copy(example, overlay / "secrets.env")
        yield copy_dir


def render_overlays(command: list[str]) -> dict[str, list[dict[str, Any]]]:
    rendered: dict[str, list[dict[str, Any]]] = {}
    with k8s_copy() as copy_dir:
        for overlay in sorted((copy_dir / "overlays").iterdir()):
            done = run([*command, str(overlay)])
            if done.returncode != 0:
                raise Failure(f"kustomize {overlay.name}: {done.stderr.strip()}")
            rendered[overlay.name] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return rendered


# ------------------------------------------------------------------------------------ schemas
def name_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def unknown_fields(given: Any, parsed: Any, path: str = "") -> list[str]:
    """Paths of keys in ``given`` that the model dropped (fields its schema does not have)."""
    if isinstance(given, dict) and isinstance(parsed, dict):
        missing = [f"{path}.{k}" for k in given if k not in parsed]
        for key in given:
            if key in parsed:
                missing += unknown_fields(given[key], parsed[key], f"{path}.{key}")
        return missing
    if isinstance(given, list) and isinstance(parsed, list):
        return [m for g, p in zip(given, parsed, strict=False) for m in unknown_fields(g, p, path)]
    return []


def validate_keda(obj: dict[str, Any]) -> list[str]:
    from cloudcoil.models.keda import v1alpha1  # noqa: PLC0415 - a tool of .tools/deploy
    from pydantic import ValidationError  # noqa: PLC0415

    model = {"ScaledObject": v1alpha1.ScaledObject, "ScaledJob": v1alpha1.ScaledJob}.get(
        obj["kind"]
    )
    if model is None:
        return [f"{name_of(obj)}: no KEDA model for kind {obj['kind']}"]
    try:
        parsed = model.model_validate(obj)
    except ValidationError as exc:
        return [f"{name_of(obj)}: {exc}"]
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{name_of(obj)}: unknown field {p}" for p in unknown_fields(obj, dumped)]


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural schema in which every object refuses fields it does not list, as the
    API server's strict field validation (kubectl's default) does; an object marked
    ``x-kubernetes-preserve-unknown-fields`` or with ``additionalProperties`` stays open."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: closed(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = closed(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = closed(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [closed(s) for s in out[key]]
    return out


@functools.cache
def custom_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the closed openAPIV3Schema of every CRD under CRD_SCHEMAS."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_SCHEMAS.rglob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = closed(schema)
    return schemas


def validate_custom(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    from jsonschema import Draft7Validator  # noqa: PLC0415 - kubernetes-validate's dependency

    found = sorted(
        Draft7Validator(schema).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]
    )
    return [
        f"{name_of(obj)}: {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in found
    ]


def validate_schemas(objects: list[dict[str, Any]]) -> list[str]:
    import kubernetes_validate  # noqa: PLC0415 - a tool of .tools/deploy
    from kubernetes_validate.utils import (  # noqa: PLC0415
        SchemaNotFoundError,
        ValidationError,
        VersionNotSupportedError,
    )

    errors: list[str] = []
    for obj in objects:
        if str(obj.get("apiVersion", "")).startswith("keda.sh/"):
            errors += validate_keda(obj)
            continue
        custom = custom_schemas().get((str(obj.get("apiVersion")), str(obj.get("kind"))))
        if custom is not None:
            errors += validate_custom(obj, custom)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            errors.append(f"{name_of(obj)}: {where}: {exc.message}")
        except (SchemaNotFoundError, VersionNotSupportedError) as exc:
            errors.append(f"{name_of(obj)}: {exc}")
    return errors


# ------------------------------------------------------------------------------------ policy
def served_paths() -> set[str]:
    """The paths of xtyl_common.health's routes, which every HTTP service mounts."""
    return set(re.findall(r'@get\(\s*"(/[^"]*)"', HEALTH_ROUTES.read_text()))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    return None


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "IngressClass"}
#: Volume types the `restricted` Pod Security Standard admits.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_pod_security(spec: dict[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard (which the overlays' namespaces enforce)
    would refuse in this pod spec: the cluster would not run it."""
    errors: list[str] = []
    pod = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            errors.append(f"{flag} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            errors.append(f"volume {volume['name']} is {sorted(kinds)}")
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    for container in containers:
        own = container.get("securityContext", {})
        name = container["name"]
        if own.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            errors.append(f"{name}: runAsNonRoot is not true")
        if own.get("runAsUser", pod.get("runAsUser")) == 0:
            errors.append(f"{name}: runAsUser is 0")
        if own.get("privileged"):
            errors.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = own.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            errors.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            errors.append(f"{name}: adds capabilities {capabilities['add']}")
        seccomp = own.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            errors.append(f"{name}: seccompProfile is {seccomp}, not RuntimeDefault")
    return errors


def own_policies(objects: list[dict[str, Any]]) -> list[str]:
    errors: list[str] = []
    paths = served_paths()
    namespaces: set[str] = set()
    denied: set[str] = set()
    for obj in objects:
        namespace = obj.get("metadata", {}).get("namespace", "-")
        if namespace == "-" and obj.get("kind") not in CLUSTER_SCOPED:
            errors.append(f"{name_of(obj)}: no namespace (kubectl apply puts it in the default)")
        spec = pod_spec(obj)
        if spec is not None:
            namespaces.add(namespace)
            errors += [
                f"{name_of(obj)}: restricted PSS: {e}" for e in restricted_pod_security(spec)
            ]
            for container in spec.get("containers", []):
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    http = container.get(probe, {}).get("httpGet")
                    if http and http.get("path") not in paths:
                        errors.append(
                            f"{name_of(obj)}: {container['name']} {probe} asks"
                            f" {http.get('path')}, which no service serves ({sorted(paths)})"
                        )
        if obj.get("kind") == "NetworkPolicy":
            spec = obj["spec"]
            if (
                (
                    spec.get("podSelector") in ({}, None)
                    or spec.get("podSelector") == {"matchLabels": {}}
                )
                and "Ingress" in spec.get("policyTypes", [])
                and not spec.get("ingress")
            ):
                denied.add(namespace)
    for namespace in sorted(namespaces - denied):
        errors.append(f"namespace {namespace}: no default-deny ingress NetworkPolicy")
    return errors


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector selects ``labels``."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and labels.get(key) in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def monitored_ports(monitor: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """What a ServiceMonitor (Services) or PodMonitor (pod templates) selects in its namespace:
    each target's name and the names of the ports it declares."""
    namespace = monitor["metadata"].get("namespace")
    selector = monitor["spec"].get("selector", {})
    ports: dict[str, set[str]] = {}
    for obj in objects:
        if obj.get("metadata", {}).get("namespace") != namespace:
            continue
        spec = pod_spec(obj)
        if monitor["kind"] == "ServiceMonitor" and obj.get("kind") == "Service":
            labels, declared = obj["metadata"].get("labels", {}), obj["spec"].get("ports", [])
        elif monitor["kind"] == "PodMonitor" and spec is not None:
            labels = obj["spec"]["template"]["metadata"].get("labels", {})
            declared = [p for c in spec["containers"] for p in c.get("ports", [])]
        else:
            continue
        if selects(selector, labels):
            ports[obj["metadata"]["name"]] = {p.get("name", "") for p in declared}
    return ports


def monitor_targets(objects: list[dict[str, Any]]) -> list[str]:
    """Every ServiceMonitor/PodMonitor selects something in its namespace and scrapes, on
    each of them, a port it declares (by name) and a path the services serve."""
    errors: list[str] = []
    paths = served_paths()
    for monitor in objects:
        if monitor.get("kind") not in {"ServiceMonitor", "PodMonitor"}:
            continue
        ports = monitored_ports(monitor, objects)
        if not ports:
            errors.append(f"{name_of(monitor)}: selects nothing in its namespace")
        spec = monitor["spec"]
        for endpoint in spec.get("endpoints") or spec.get("podMetricsEndpoints", []):
            port = endpoint.get("port")
            errors += [
                f"{name_of(monitor)}: {target} has no port {port!r}"
                for target, declared in sorted(ports.items())
                if port not in declared
            ]
            if endpoint.get("path", "/metrics") not in paths:
                errors.append(
                    f"{name_of(monitor)}: scrapes {endpoint.get('path')}, which no service"
                    f" serves ({sorted(paths)})"
                )
    return errors


def checkov(files: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Run checkov once over every rendered overlay; the POLICY_CHECKS that failed."""
    with tempfile.TemporaryDirectory(prefix="xtyl-checkov-") as tmp:
        for name, objects in files.items():
            (Path(tmp) / f"{name}.yaml").write_text(yaml.safe_dump_all(objects))
        done = run(
            [
                str(TOOLS / "checkov"),
                "--directory",
                tmp,
                "--framework",
                "kubernetes",
                "--check",
                ",".join(POLICY_CHECKS),
                "--output",
                "json",
                "--quiet",
                "--compact",
                "--skip-download",
            ],
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
        )
    if done.returncode not in (0, 1):
        raise Failure(f"checkov: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout or "{}")
    reports = report if isinstance(report, list) else [report]
    errors = []
    for one in reports:
        for failed in one.get("results", {}).get("failed_checks", []):
            errors.append(
                f"{Path(failed['file_path']).stem}: {failed['resource']}: {failed['check_id']}"
                f" {failed['check_name']}"
            )
    return errors


def hadolint(dockerfile: Path) -> list[str]:
    done = run([str(TOOLS / "hadolint"), "--no-color", str(dockerfile)])
    return [line for line in done.stdout.splitlines() if line.strip()] or (
        [done.stderr.strip()] if done.returncode else []
    )


# ------------------------------------------------------------------------------------ all
def check_all(rendered: dict[str, list[dict[str, Any]]], dockerfile: Path) -> list[str]:
    errors: list[str] = []
    for name, objects in rendered.items():
        errors += [f"{name}: {e}" for e in validate_schemas(objects)]
        errors += [f"{name}: {e}" for e in own_policies(objects)]
        errors += [f"{name}: {e}" for e in monitor_targets(objects)]
    errors += checkov(rendered)
    errors += [f"hadolint: {e}" for e in hadolint(dockerfile)]
    return errors


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise Failure(f"no {kind}/{name} in the rendered overlay")


def break_probe_path(objects: list[dict[str, Any]]) -> None:
    container = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["path"] = "/healthz"


def break_run_as_non_root(objects: list[dict[str, Any]]) -> None:
    spec = find(objects, "Deployment", "storage")["spec"]["template"]["spec"]
    spec.get("securityContext", {}).pop("runAsNonRoot", None)
    for container in spec["containers"]:
        container.get("securityContext", {}).pop("runAsNonRoot", None)


def break_namespace(objects: list[dict[str, Any]]) -> None:
    del find(objects, "ScaledObject", "notify-worker")["metadata"]["namespace"]


def break_default_deny(objects: list[dict[str, Any]]) -> None:
    objects.remove(find(objects, "NetworkPolicy", "default-deny-ingress"))


def break_schema(objects: list[dict[str, Any]]) -> None:
    container = find(objects, "Deployment", "rag")["spec"]["template"]["spec"]["containers"][0]
    container["port"] = 8000  # a typo of `ports`: not a field of Container


def break_keda(objects: list[dict[str, Any]]) -> None:
    scaled = find(objects, "ScaledObject", "rag-worker")
    scaled["spec"]["minReplicas"] = 1  # HPA's name, not KEDA's minReplicaCount


def break_service_monitor(objects: list[dict[str, Any]]) -> None:
    monitor = find(objects, "ServiceMonitor", "xtyl-services")
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "30s"  # `interval` is the field


def break_pod_monitor_port(objects: list[dict[str, Any]]) -> None:
    find(objects, "PodMonitor", "xtyl-workers")["spec"]["podMetricsEndpoints"][0]["port"] = "scrape"


def break_prometheus_rule(objects: list[dict[str, Any]]) -> None:
    rule = find(objects, "PrometheusRule", "xtyl")["spec"]["groups"][0]["rules"][0]
    rule["expression"] = rule.pop("expr")


SELF_TESTS: dict[str, tuple[str, Callable[[list[dict[str, Any]]], None], str]] = {
    # name: (overlay, how to break it, what the error must mention)
    "probe path that does not exist": ("production", break_probe_path, "/healthz"),
    "missing runAsNonRoot": ("production", break_run_as_non_root, "runAsNonRoot"),
    "object without a namespace": ("production-keda", break_namespace, "no namespace"),
    "no default-deny NetworkPolicy": ("staging", break_default_deny, "default-deny"),
    "unknown field in a Deployment": ("production", break_schema, "port"),
    "unknown field in a ScaledObject": ("production-keda", break_keda, "minReplicas"),
    "unknown field in a ServiceMonitor": (
        "production-monitoring",
        break_service_monitor,
        "scrapeInterval",
    ),
    "PodMonitor on a port no worker declares": (
        "production-monitoring",
        break_pod_monitor_port,
        "has no port 'scrape'",
    ),
    "PrometheusRule rule without expr": ("production-monitoring", break_prometheus_rule, "expr"),
}


def self_test(rendered: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems: list[str] = []
    for label, (overlay, breaker, expected) in SELF_TESTS.items():
        broken = {overlay: copy.deepcopy(rendered[overlay])}
        breaker(broken[overlay])
        errors = (
            validate_schemas(broken[overlay])
            + own_policies(broken[overlay])
            + monitor_targets(broken[overlay])
        )
        if expected.startswith("CKV_"):
            errors += checkov(broken)
        caught = [e for e in errors if expected in e]
        if caught:
            say(f"self-test: {label}: caught: {caught[0][:160]}")
        else:
            problems.append(f"self-test: {label} was NOT caught (errors: {errors})")
    with tempfile.TemporaryDirectory() as tmp:
        broken_file = Path(tmp) / "Dockerfile"
        text = DOCKERFILE.read_text()
        broken_file.write_text(
            re.sub(
                r"^FROM \$\{PYTHON_IMAGE\} AS runtime$",
                "FROM python:latest AS runtime",
                text,
                flags=re.M,
            )
        )
        lint = hadolint(broken_file)
        if any("DL3007" in line for line in lint):
            say("self-test: Dockerfile FROM ...:latest: caught by hadolint DL3007")
        else:
            problems.append(f"self-test: hadolint missed FROM python:latest ({lint})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s/check.py", description=__doc__)
    parser.add_argument("--self-test", action="store_true", help="also prove each check fails")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        command = kustomize_command()
        rendered = render_overlays(command)
        say(
            f"rendered {', '.join(f'{k} ({len(v)} objects)' for k, v in rendered.items())}"
            f" with {kustomize_version(command)}"
        )
        errors = check_all(rendered, DOCKERFILE)
        if errors:
            for error in errors:
                print(f"deploy-lint: {error}", file=sys.stderr)
            return 1
        crds = ", ".join(sorted(p.name for p in CRD_SCHEMAS.iterdir() if p.is_dir()))
        say(
            f"schemas (Kubernetes {KUBERNETES_VERSION}, KEDA 2.16.1, {crds} CRDs), checkov"
            f" ({len(POLICY_CHECKS)} checks), probe paths, default-deny, monitor ports, hadolint:"
            " all pass"
        )
        if args.self_test:
            problems = self_test(rendered)
            if problems:
                for problem in problems:
                    print(f"deploy-lint: {problem}", file=sys.stderr)
                return 1
            say(f"self-test: every broken copy was caught ({len(SELF_TESTS) + 1} cases)")
    except Failure as exc:
        print(f"deploy-lint: {exc}", file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
