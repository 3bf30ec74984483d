"""Every kustomization under k8s/ renders, and every object it renders is valid: core kinds against
the Kubernetes schemas (kubernetes-validate, strict), custom resources against their CRDs (the
shared schemas), pods against the restricted Pod Security Standard. Also the rendering helpers the
other k8s tests import."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.schemas import how_to_get, require_crds

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
IN_CI = bool(os.environ.get("CI"))
# The Kubernetes minor version of k8s/k3d/cluster.yaml's k3s image.
KUBERNETES_VERSION = "1.31"
NAMESPACE = "logship"
CLUSTER_SCOPED = {"Namespace", "PersistentVolume"}
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "RabbitmqCluster": "rabbitmq.com_rabbitmqclusters.yaml",
    **{
        kind: f"rabbitmq.com_{kind.lower()}s.yaml"
        for kind in ("Queue", "Exchange", "Binding", "User", "Permission", "Vhost")
    },
    "Policy": "rabbitmq.com_policies.yaml",
}

Manifest = dict[str, Any]


def missing(reason: str) -> None:
    """A tool or file the test needs is absent: a skip on a laptop, a failure in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must have it)")
    pytest.skip(reason)


def find_tool(name: str) -> str | None:
    """A tool on PATH, or installed from PyPI into the running interpreter's environment."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        missing(f"{name} is not installed")
    assert path is not None
    return path


def kustomizations() -> list[Path]:
    """Every folder under k8s/ that kustomize can build on its own (components excluded)."""
    found = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        kind = yaml.safe_load(path.read_text()).get("kind", "Kustomization")
        if kind == "Kustomization":
            found.append(path.parent)
    return found


def kustomization_id(directory: Path) -> str:
    return str(directory.relative_to(K8S))


@functools.cache
def _rendered(directory: Path) -> str:
    kubectl = find_tool("kubectl")
    if kubectl is None:
        missing("kubectl is not installed: `kubectl kustomize` renders the overlays")
    assert kubectl is not None
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    return proc.stdout


def render(directory: Path | str) -> list[Manifest]:
    """The objects `kubectl kustomize DIR` renders (DIR relative to k8s/ or absolute)."""
    path = directory if isinstance(directory, Path) else K8S / directory
    return [doc for doc in yaml.safe_load_all(_rendered(path.resolve())) if doc]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} among {[o['metadata']['name'] for o in objects]}")


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, pod spec) for every object that creates pods."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj, obj["spec"]


def _strict(schema: Any) -> Any:
    """Forbid unknown fields where the API server would prune them: a typo in a custom resource
    must fail here, not be silently dropped at apply time."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def crd_schema(kind: str, api_version: str) -> dict[str, Any]:
    file = require_crds() / CRD_FILES[kind]
    if not file.is_file():
        missing(f"no CRD schema {file} ({how_to_get()})")
    crd = yaml.safe_load(file.read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group, f"{kind}: group {group} is not {crd['spec']['group']}"
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema = _strict(entry["schema"]["openAPIV3Schema"])
            # metadata is validated by the API server itself, not by the CRD.
            schema["properties"]["metadata"] = {"type": "object"}
            return dict(schema)
    raise AssertionError(f"{kind}: the CRD has no version {version}")


def validate(obj: Manifest) -> None:
    """Raise on an object that the API server (or its CRD) would refuse."""
    import jsonschema
    import kubernetes_validate

    kind = obj["kind"]
    if kind in CRD_FILES:
        jsonschema.Draft202012Validator(crd_schema(kind, obj["apiVersion"])).validate(obj)
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def describe(obj: Manifest) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("directory", kustomizations(), ids=kustomization_id)
def test_every_rendered_object_is_valid(directory: Path) -> None:
    objects = render(directory)
    assert objects, f"{directory} renders nothing"
    errors = []
    for obj in objects:
        try:
            validate(obj)
        except Exception as error:  # collect every invalid object, then fail once
            message = getattr(error, "message", str(error))
            path = "/".join(str(p) for p in getattr(error, "absolute_path", []))
            errors.append(f"{describe(obj)}: {message} at {path or '.'}")
    assert not errors, "\n".join(errors)


def plain_manifest_files() -> list[Path]:
    """The YAML files under k8s/ that hold Kubernetes objects (not kustomizations, chart values or
    the k3d config): validated as written, whether or not kubectl is there to render them."""
    files = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path.parent.name in ("helm", "k3d"):
            continue
        files.append(path)
    return files


@pytest.mark.parametrize("path", plain_manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_plain_manifest_file_is_valid(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path} is empty"
    for obj in documents:
        assert {"apiVersion", "kind", "metadata"} <= obj.keys(), f"{path}: not an object"
        validate(obj)


@pytest.mark.parametrize("directory", kustomizations(), ids=kustomization_id)
def test_every_namespaced_object_is_in_logship(directory: Path) -> None:
    for obj in render(directory):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert namespace is None, describe(obj)
        else:
            assert namespace == NAMESPACE, f"{describe(obj)} is in namespace {namespace}"


@pytest.mark.parametrize("directory", kustomizations(), ids=kustomization_id)
def test_no_two_objects_share_a_name(directory: Path) -> None:
    keys = [
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in render(directory)
    ]
    assert len(keys) == len(set(keys))


def _pod_violations(name: str, spec: Manifest) -> Iterator[str]:
    """What the restricted Pod Security Standard refuses at the pod level."""
    pod = spec.get("securityContext", {})
    if pod.get("runAsNonRoot") is not True:
        yield f"{name}: pod runAsNonRoot is not true"
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        yield f"{name}: pod seccompProfile is not RuntimeDefault"
    if spec.get("automountServiceAccountToken") is not False:
        yield f"{name}: mounts a service-account token it does not use"
    yield from (
        f"{name}: {flag}" for flag in ("hostNetwork", "hostPID", "hostIPC") if spec.get(flag)
    )
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            yield f"{name}: hostPath volume {volume['name']} (use a PersistentVolume)"


def _container_violations(where: str, container: Manifest) -> Iterator[str]:
    """The restricted standard per container, plus this project's rules: a read-only root
    filesystem, requests and a memory limit, a fixed image tag."""
    context = container.get("securityContext", {})
    capabilities = context.get("capabilities", {})
    checks = {
        "allowPrivilegeEscalation is not false": context.get("allowPrivilegeEscalation") is False,
        "root filesystem is writable": context.get("readOnlyRootFilesystem") is True,
        "does not drop ALL capabilities": capabilities.get("drop") == ["ALL"],
        "adds capabilities": not capabilities.get("add"),
        "is privileged": not context.get("privileged"),
    }
    yield from (f"{where}: {problem}" for problem, ok in checks.items() if not ok)
    resources = container.get("resources", {})
    wanted = [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")]
    for section, resource in wanted:
        if resource not in resources.get(section, {}):
            yield f"{where}: no {resource} in {section}"
    image = container.get("image", "")
    if ":" not in image or image.endswith(":latest"):
        yield f"{where}: image {image!r} has no fixed tag"


def _restricted_violations(workload: Manifest, spec: Manifest) -> Iterator[str]:
    name = describe(workload)
    yield from _pod_violations(name, spec)
    for container in spec.get("initContainers", []) + spec["containers"]:
        yield from _container_violations(f"{name} container {container['name']}", container)


@pytest.mark.parametrize("directory", kustomizations(), ids=kustomization_id)
def test_pods_meet_the_restricted_standard(directory: Path) -> None:
    problems = [p for w, s in pod_specs(render(directory)) for p in _restricted_violations(w, s)]
    assert not problems, "\n".join(problems)


def test_the_namespace_enforces_the_restricted_standard() -> None:
    namespace = find(render("base"), "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_overlay_and_job_is_covered() -> None:
    """A kustomization added later is picked up by the tests above without being listed."""
    names = {kustomization_id(d) for d in kustomizations()}
    expected = {"base", "overlays/k3d", "overlays/k3d-keda", "overlays/k3d-hpa"}
    expected |= {"jobs/drain-backlog", "overlays/k3d-drain", "overlays/k3d-ha"}
    assert expected <= names


def test_validation_catches_a_bad_object() -> None:
    """The validators are not vacuous: a misspelt field fails, for a core kind and for a CRD."""
    objects = render("overlays/k3d-keda")
    statefulset = find(objects, "StatefulSet", "logship-consumer")
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["replica"] = 2
    with pytest.raises(Exception, match="replica"):
        validate(broken)
    scaled = yaml.safe_load(yaml.safe_dump(find(objects, "ScaledObject", "logship-consumer")))
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(Exception, match="maxReplicas"):
        validate(scaled)


def test_k3d_cluster_config_mounts_the_data_folder() -> None:
    config = yaml.safe_load((K8S / "k3d" / "cluster.yaml").read_text())
    assert config["apiVersion"] == "k3d.io/v1alpha5"
    assert config["kind"] == "Simple"
    mounts = [v["volume"] for v in config["volumes"]]
    assert "${LOGSHIP_DATA_DIR}:/var/lib/logship" in mounts
    image_version = config["image"].split(":v", 1)[1]
    assert image_version.startswith(KUBERNETES_VERSION + "."), "validate against the k3s version"
