"""What a real cluster needs beyond valid manifests (issue 17), each rule checked offline against
the files that carry it: one external-metrics backend per installation path of scripts/k3d.sh, an
absolute broker memory watermark below the container's limit, laptop scripts that bash 3.2 runs,
node-exporter without the host root mount on k3d, no spec.replicas under an autoscaler, and an
autoscaling demo whose input, batch size and target make the consumer count the README promises."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from producer.batcher import cut_batch
from producer.settings import ProducerSettings
from tests.unit.test_k8s_manifests import K8S, REPO, Manifest, find, render

K3D_SCRIPT = REPO / "scripts" / "k3d.sh"
LAPTOP_SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
EXTERNAL_METRICS_API = "v1beta1.external.metrics.k8s.io"
# What each backend's chart registers that APIService with (namespace/service).
BACKEND_SERVICES = {
    "keda": "keda/keda-operator-metrics-apiserver",
    "prometheus-adapter": "monitoring/prometheus-adapter",
}
AUTOSCALERS = ("ScaledObject", "HorizontalPodAutoscaler")
WORKLOADS = ("Deployment", "StatefulSet", "ReplicaSet")

# ---- scripts/k3d.sh run against stand-ins for the cluster tools --------------------------------

# Each stand-in logs its command line; helm and kubectl keep the one fact the script asks about:
# which release serves the external metrics API. helm refuses a second one as Helm does (both
# charts own the same APIService).
_STUB = r"""#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"$STUB_DIR/calls"
state="$STUB_DIR/external-metrics"
case "$(basename "$0") $*" in
  "helm upgrade --install keda "*) service=keda/keda-operator-metrics-apiserver ;;
  "helm upgrade --install prometheus-adapter "*) service=monitoring/prometheus-adapter ;;
  "kubectl get apiservice v1beta1.external.metrics.k8s.io "*)
    [ -f "$state" ] || { echo 'Error from server (NotFound)' >&2; exit 1; }
    cat "$state"; exit 0 ;;
  "k3d cluster list "*) exit 1 ;;
  "kubectl --namespace logship get scaledobject logship-consumer")
    [ "$(cat "$STUB_DIR/autoscaler" 2>/dev/null)" = keda ]; exit ;;
  "kubectl --namespace logship get hpa logship-consumer")
    [ "$(cat "$STUB_DIR/autoscaler" 2>/dev/null)" = hpa ]; exit ;;
  "kubectl --namespace logship exec rabbitmq-0 -- rabbitmqctl "*)
    printf 'logs.dead\t0\nlogs\t%s\n' "$(cat "$STUB_DIR/ready" 2>/dev/null || echo 0)"; exit 0 ;;
  *) exit 0 ;;
esac
if [ -f "$state" ] && [ "$(cat "$state")" != "$service" ]; then
  echo "Error: APIService v1beta1.external.metrics.k8s.io exists and cannot be imported:" \
    "invalid ownership metadata" >&2
  exit 1
fi
printf '%s' "$service" >"$state"
"""


@dataclass
class Run:
    returncode: int
    stderr: str
    calls: list[str]

    def releases(self) -> list[str]:
        return [c.split()[3] for c in self.calls if c.startswith("helm upgrade --install ")]


class FakeCluster:
    """A PATH on which docker, k3d, kubectl and helm are stand-ins that record their calls."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "stubs"
        self.bin = self.dir / "bin"
        self.bin.mkdir(parents=True)
        for tool in ("docker", "k3d", "kubectl", "helm"):
            path = self.bin / tool
            path.write_text(_STUB)
            path.chmod(0o755)
        self.data = root / "data"

    def serve_external_metrics(self, backend: str) -> None:
        (self.dir / "external-metrics").write_text(BACKEND_SERVICES[backend])

    def drive_with(self, autoscaler: str, ready_messages: int = 0) -> None:
        """The autoscaler applied (keda, hpa) and the depth rabbitmqctl reports for `logs`."""
        (self.dir / "autoscaler").write_text(autoscaler)
        (self.dir / "ready").write_text(str(ready_messages))

    def run(self, *args: str) -> Run:
        calls = self.dir / "calls"
        calls.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(
            PATH=f"{self.bin}{os.pathsep}{env['PATH']}",
            STUB_DIR=str(self.dir),
            LOGSHIP_DATA_DIR=str(self.data),
        )
        proc = subprocess.run(
            ["bash", str(K3D_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60
        )
        lines = calls.read_text().splitlines() if calls.exists() else []
        return Run(proc.returncode, proc.stderr, lines)


def needed_backend(overlay: str) -> str | None:
    """The backend the rendered overlay's autoscaler reads: KEDA serves a ScaledObject's metrics,
    prometheus-adapter an HPA's External metric, nothing else is needed without an autoscaler."""
    kinds = {obj["kind"] for obj in render(f"overlays/{overlay}")}
    if "ScaledObject" in kinds:
        return "keda"
    if "HorizontalPodAutoscaler" in kinds:
        return "prometheus-adapter"
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_installation_path_installs_one_external_metrics_backend(
    overlay: str, tmp_path: Path
) -> None:
    """`scripts/k3d.sh all OVERLAY` installs the backend that overlay needs and never the other:
    KEDA and prometheus-adapter both register v1beta1.external.metrics.k8s.io."""
    run = FakeCluster(tmp_path).run("all", overlay)
    assert run.returncode == 0, run.stderr
    releases = run.releases()
    backends = [r for r in releases if r in BACKEND_SERVICES]
    wanted = needed_backend(overlay)
    assert backends == ([wanted] if wanted else []), releases
    assert releases[0] == "kube-prometheus-stack", "its CRDs come before the overlay"
    assert any(c.startswith("kubectl apply --kustomize ") for c in run.calls)


def test_the_autoscaled_overlays_need_both_backends_between_them() -> None:
    """The parametrised test above is not vacuous: each backend is some overlay's."""
    assert {needed_backend(o) for o in OVERLAYS} >= {"keda", "prometheus-adapter"}


@pytest.mark.parametrize(
    ("installed", "command", "refused"),
    [
        ("keda", ("adapter",), True),
        ("prometheus-adapter", ("keda",), True),
        ("keda", ("apply", "k3d-hpa"), True),
        ("prometheus-adapter", ("apply", "k3d-keda"), True),
        ("prometheus-adapter", ("all", "k3d-keda"), True),
        ("keda", ("keda",), False),
        ("keda", ("apply", "k3d-keda"), False),
        ("prometheus-adapter", ("all", "k3d-hpa"), False),
    ],
)
def test_a_second_backend_is_refused_before_helm_runs(
    installed: str, command: tuple[str, ...], refused: bool, tmp_path: Path
) -> None:
    cluster = FakeCluster(tmp_path)
    cluster.serve_external_metrics(installed)
    run = cluster.run(*command)
    if not refused:
        assert run.returncode == 0, run.stderr
        return
    assert run.returncode != 0
    assert EXTERNAL_METRICS_API in run.stderr and "invalid ownership" not in run.stderr
    assert not [r for r in run.releases() if r in BACKEND_SERVICES and r != installed]
    assert not any(c.startswith("kubectl apply") for c in run.calls)


def test_the_stand_in_helm_refuses_as_helm_does(tmp_path: Path) -> None:
    """Without the script's check the second chart fails, as on a real cluster (issue 17)."""
    cluster = FakeCluster(tmp_path)
    cluster.serve_external_metrics("keda")
    env = dict(os.environ, STUB_DIR=str(cluster.dir))
    proc = subprocess.run(
        [str(cluster.bin / "helm"), "upgrade", "--install", "prometheus-adapter", "x/y"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1 and "invalid ownership metadata" in proc.stderr


@pytest.mark.parametrize(
    ("autoscaler", "pause", "resume"),
    [
        (
            "keda",
            "kubectl --namespace logship annotate scaledobject logship-consumer "
            "autoscaling.keda.sh/paused-replicas=0 --overwrite",
            "kubectl --namespace logship annotate scaledobject logship-consumer "
            "autoscaling.keda.sh/paused-replicas-",
        ),
        (
            "hpa",
            "kubectl --namespace logship scale statefulset logship-consumer --replicas 0",
            "kubectl --namespace logship scale statefulset logship-consumer --replicas 1",
        ),
    ],
)
def test_demo_holds_the_consumers_until_the_backlog_is_queued(
    autoscaler: str, pause: str, resume: str, tmp_path: Path
) -> None:
    """`demo LINES`: consumers held at 0, the run appended to input.txt, the autoscaler given the
    consumers back once rabbitmqctl reports the run's messages ready."""
    cluster = FakeCluster(tmp_path)
    lines = 8192 * 3  # three full 1 MiB batches
    cluster.drive_with(autoscaler, ready_messages=3)
    run = cluster.run("demo", str(lines))
    assert run.returncode == 0, run.stderr
    assert pause in run.calls and resume in run.calls
    assert run.calls.index(pause) < run.calls.index(resume)
    waited = [c for c in run.calls if c.startswith("kubectl --namespace logship wait ")]
    assert waited and run.calls.index(waited[0]) < run.calls.index(resume), "consumers gone first"
    (written,) = cluster.data.glob("demo-*.txt")
    assert (cluster.data / "input.txt").read_bytes() == written.read_bytes()
    assert len(written.read_bytes().splitlines()) == lines
    assert f"demo-check {written.stem}" in run.stderr


def test_demo_refuses_without_an_autoscaler(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path)
    cluster.drive_with("none")
    run = cluster.run("demo", "10")
    assert run.returncode != 0 and "k3d-keda" in run.stderr
    assert not list(tmp_path.rglob("demo-*.txt")), "nothing written for a demo that cannot run"


# ---- bash 3.2 ---------------------------------------------------------------------------------

# What bash 3.2 (stock macOS) lacks or does differently, as written in a script.
BASH4_ONLY = {
    "mapfile": r"\bmapfile\b",
    "readarray": r"\breadarray\b",
    "associative array": r"\b(declare|local|typeset)\s+-\w*A",
    "case conversion": r"\$\{\w+(\[[^]]*\])?(,,?|\^\^?)",
    "append both streams (&>>)": r"&>>",
    "pipe both streams (|&)": r"\|&",
    "coproc": r"\bcoproc\b",
    "globstar": r"shopt\s+-s\s+globstar",
    "negative array index": r"\$\{\w+\[-\d+\]\}",
    "printf to a variable with %(...)T": r"%\([^)]*\)T",
    "wait -n": r"\bwait\s+-n\b",
    "declare -n (nameref)": r"\b(declare|local)\s+-\w*n\b",
}
# An array that may be empty, expanded under `set -u`, is an "unbound variable" before bash 4.4.
ARRAY_DECLARATION = r"\b(local|declare)\s+-a\b|^\s*\w+=\(\s*\)"


def _code_lines(script: Path) -> list[tuple[int, str]]:
    """Lines that are not comments (a comment may well name mapfile)."""
    lines = []
    for number, line in enumerate(script.read_text().splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        lines.append((number, line))
    return lines


@pytest.mark.parametrize("script", LAPTOP_SCRIPTS, ids=lambda p: p.name)
def test_laptop_scripts_use_nothing_bash_3_2_lacks(script: Path) -> None:
    problems = [
        f"{script.name}:{number}: {what}: {line.strip()}"
        for number, line in _code_lines(script)
        for what, pattern in BASH4_ONLY.items()
        if re.search(pattern, line)
    ]
    assert not problems, "\n".join(problems)


def test_k3d_script_has_no_arrays_to_expand_empty() -> None:
    declared = [
        f"{n}: {line}" for n, line in _code_lines(K3D_SCRIPT) if re.search(ARRAY_DECLARATION, line)
    ]
    assert not declared, "\n".join(declared)


def test_the_bash4_patterns_catch_what_broke_macos() -> None:
    """The rules are not vacuous: the lines the issue found, and their kin, are caught."""
    caught = [
        'mapfile -t version < <(chart_version "$KPS_VERSION")',
        "declare -A seen",
        'echo "${name,,}"',
        "make &>> log",
        "coproc cat",
    ]
    for line in caught:
        assert any(re.search(p, line) for p in BASH4_ONLY.values()), line
    assert re.search(ARRAY_DECLARATION, "    local -a version")


# ---- kube-prometheus-stack on k3d --------------------------------------------------------------


def test_node_exporter_does_not_mount_the_host_root_on_k3d() -> None:
    """A k3d node is a Docker container whose / is not a shared mount: node-exporter's default
    root mount with HostToContainer propagation never starts there, and `helm --wait` times out."""
    values = yaml.safe_load((K8S / "helm" / "kube-prometheus-stack.yaml").read_text())
    node_exporter = values["prometheus-node-exporter"]
    assert node_exporter["hostRootFsMount"]["enabled"] is False
    assert values.get("nodeExporter", {}).get("enabled", True), "keep the node metrics otherwise"


def test_prometheus_adapter_registers_only_the_external_metrics_api() -> None:
    """k3s's own metrics-server serves v1beta1.metrics.k8s.io (`kubectl top`, CPU HPAs): the
    adapter must not claim it (rules.resource) nor the custom metrics API nobody reads."""
    rules = yaml.safe_load((K8S / "helm" / "prometheus-adapter.yaml").read_text())["rules"]
    assert rules.get("default") is False
    assert not rules.get("custom") and not rules.get("resource") and not rules.get("existing")
    assert rules["external"], "the queue-depth rule the HPA reads"


# ---- the broker's memory watermark ------------------------------------------------------------

UNITS = {
    "": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "kiB": 1024,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "k": 1024,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
}
QUANTITY = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}


def information_unit(value: str) -> int:
    """A rabbitmq.conf information unit, as rabbit_resource_monitor_misc parses it."""
    match = re.fullmatch(r"(\d+)\s*([kKMG]i?B?|)", value.strip())
    assert match and match[2] in UNITS, f"not an information unit RabbitMQ reads: {value!r}"
    return int(match[1]) * UNITS[match[2]]


def kubernetes_quantity(value: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i|[kMG]|)", str(value))
    assert match, f"not a memory quantity: {value!r}"
    return int(match[1]) * QUANTITY[match[2]]


def broker_conf() -> dict[str, str]:
    """The settings of rabbitmq.conf (sysctl format), key -> value."""
    settings = {}
    for line in (K8S / "base" / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            settings[key] = value
    return settings


def broker_memory_limit() -> int:
    broker = find(render("base"), "StatefulSet", "rabbitmq")
    (container,) = broker["spec"]["template"]["spec"]["containers"]
    return kubernetes_quantity(container["resources"]["limits"]["memory"])


def test_broker_watermark_is_absolute_and_below_the_container_limit() -> None:
    """RabbitMQ computes a relative watermark from /proc/meminfo, the whole node's memory, not the
    container's limit: only an absolute one (or total_memory_available_override_value) blocks
    publishers before the kernel kills the broker. RabbitMQ's own default is 0.6 of the total;
    more of the limit than that leaves no room for the overshoot (garbage collection, the quorum
    queue's write-ahead log)."""
    conf = broker_conf()
    limit = broker_memory_limit()
    assert "vm_memory_high_watermark.relative" not in conf or (
        "total_memory_available_override_value" in conf
    ), "a relative watermark of the node's memory, not the container's"
    if "vm_memory_high_watermark.absolute" in conf:
        watermark = information_unit(conf["vm_memory_high_watermark.absolute"])
    else:
        total = information_unit(conf["total_memory_available_override_value"])
        assert total <= limit
        watermark = int(total * float(conf.get("vm_memory_high_watermark.relative", "0.6")))
    assert 0 < watermark <= 0.6 * limit, (watermark, limit)


def test_quorum_queue_write_ahead_log_fits_under_the_watermark() -> None:
    """The WAL's in-memory table grows to raft.wal_max_size_bytes (default 512 MiB, the whole
    watermark) before it moves to disk; RabbitMQ's quorum queue guide asks for 3 to 4 times that
    in memory."""
    conf = broker_conf()
    wal = information_unit(conf.get("raft.wal_max_size_bytes", str(512 * 1024**2)))
    watermark = information_unit(conf["vm_memory_high_watermark.absolute"])
    assert 4 * wal <= watermark, (wal, watermark)


def test_the_unit_parsers_read_what_the_manifests_write() -> None:
    assert information_unit("512MiB") == 512 * 1024**2
    assert information_unit("600MB") == 600 * 1000**2
    assert information_unit("1073741824") == 1024**3
    assert kubernetes_quantity("1Gi") == 1024**3
    with pytest.raises(AssertionError):
        information_unit("0.5GiB")


# The folders the official image's broker writes (docker-library/rabbitmq's Dockerfile: the data
# dir is HOME, with the Erlang cookie; RABBITMQ_LOG_BASE defaults to /var/log/rabbitmq).
BROKER_WRITES = ("/var/lib/rabbitmq", "/var/log/rabbitmq", "/tmp")


def test_every_folder_the_broker_writes_is_a_writable_volume() -> None:
    """Under a read-only root filesystem a node that cannot open its log folder does not boot
    (tests/fault/test_broker_memory.py shows it): each folder it writes needs a volume."""
    broker = find(render("base"), "StatefulSet", "rabbitmq")
    (container,) = broker["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    for folder in (*BROKER_WRITES, env.get("RABBITMQ_LOG_BASE", "/var/log/rabbitmq")):
        assert folder in mounts, f"the broker writes {folder}, which has no volume"
        assert not mounts[folder].get("readOnly"), folder
    assert broker_conf().get("log.file") == "false", "the log goes to the console, not a file"


# ---- autoscalers own the replica count ---------------------------------------------------------


def _autoscaled_targets(objects: list[Manifest]) -> list[tuple[str, str]]:
    targets = []
    for obj in objects:
        if obj["kind"] in AUTOSCALERS:
            ref = obj["spec"]["scaleTargetRef"]
            targets.append((ref["kind"], ref["name"]))
    return targets


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaled_workloads_carry_no_replicas(overlay: str) -> None:
    """A `spec.replicas` under an autoscaler sets the consumers back to it at every apply
    (Kubernetes' HPA guide: remove it when migrating to autoscaling)."""
    objects = render(f"overlays/{overlay}")
    for kind, name in _autoscaled_targets(objects):
        assert kind in WORKLOADS
        workload = find(objects, kind, name)
        assert "replicas" not in workload["spec"], f"{overlay}: {kind}/{name} sets replicas"


def test_the_autoscaled_overlays_are_among_those_checked() -> None:
    autoscaled = [o for o in OVERLAYS if _autoscaled_targets(render(f"overlays/{o}"))]
    assert {"k3d-keda", "k3d-hpa"} <= set(autoscaled)


# ---- the autoscaling demo ----------------------------------------------------------------------


def _script_setting(name: str) -> int:
    match = re.search(rf"^{name}=(?:\$\{{\w+:-)?(\d+)\}}?$", K3D_SCRIPT.read_text(), re.M)
    assert match, f"scripts/k3d.sh sets no {name}"
    return int(match[1])


def _demo_lines(run: str, count: int) -> bytes:
    """The demo's input, written by the script's own function."""
    proc = subprocess.run(
        ["bash", "-c", f'source "{K3D_SCRIPT}"; demo_lines "$1" "$2"', "demo", run, str(count)],
        capture_output=True,
        check=True,
    )
    return proc.stdout


def _run_id() -> str:
    proc = subprocess.run(
        ["bash", "-c", f'source "{K3D_SCRIPT}"; demo_run_id'], capture_output=True, text=True
    )
    return proc.stdout.strip()


def _batch_limits() -> tuple[int, int]:
    """The producer's batch_max_bytes and batch_max_lines as the autoscaled overlays set them."""
    defaults = ProducerSettings.model_fields
    max_bytes = int(defaults["batch_max_bytes"].default)
    max_lines = int(defaults["batch_max_lines"].default)
    for overlay in ("k3d-keda", "k3d-hpa"):
        data = find(render(f"overlays/{overlay}"), "ConfigMap", "logship-producer")["data"]
        assert int(data.get("LOGSHIP_BATCH_MAX_BYTES", max_bytes)) == max_bytes
        assert int(data.get("LOGSHIP_BATCH_MAX_LINES", max_lines)) == max_lines
    return max_bytes, max_lines


def test_demo_lines_are_distinct_equal_and_of_this_run() -> None:
    run = _run_id()
    assert re.fullmatch(r"demo-\d{8}-\d{6}", run)
    data = _demo_lines(run, 20_000)
    lines = data.splitlines(keepends=True)
    assert len(lines) == 20_000 and len(set(lines)) == 20_000
    assert {len(line) for line in lines} == {_script_setting("DEMO_LINE_BYTES")}
    assert all(line.startswith(f"{run} ".encode()) for line in lines)
    assert b"e+" not in data, "no numbers in scientific notation (seq -f %g)"


@dataclass(frozen=True)
class Policy:
    target: float
    min_replicas: int
    max_replicas: int
    scale_up_pods: int


def _policies() -> list[Policy]:
    scaled = find(render("overlays/k3d-keda"), "ScaledObject", "logship-consumer")["spec"]
    hpa = find(render("overlays/k3d-hpa"), "HorizontalPodAutoscaler", "logship-consumer")["spec"]
    keda_up = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]
    (trigger,) = scaled["triggers"]
    policies = [
        Policy(
            float(trigger["metadata"]["value"]),
            scaled["minReplicaCount"],
            scaled["maxReplicaCount"],
            max(p["value"] for p in keda_up["policies"] if p["type"] == "Pods"),
        ),
        Policy(
            float(hpa["metrics"][0]["external"]["target"]["averageValue"]),
            hpa["minReplicas"],
            hpa["maxReplicas"],
            max(p["value"] for p in hpa["behavior"]["scaleUp"]["policies"] if p["type"] == "Pods"),
        ),
    ]
    return policies


def demo_consumers(
    input_bytes: int, line_bytes: int, max_bytes: int, max_lines: int
) -> dict[str, int]:
    """Messages and consumers of the demo: the producer cuts full batches of whole lines (each
    read is max_bytes long, cut after its last newline), all ready at once (the consumers are
    held at 0 while they are published); the HPA asks ceil(ready / target) consumers, within
    its range, and its scale-up policy takes it there from min in one step."""
    lines_per_batch = min(max_lines, max_bytes // line_bytes)
    messages = math.ceil(input_bytes // line_bytes / lines_per_batch)
    (policy, *others) = _policies()
    assert all(o == policy for o in others), "KEDA and the HPA scale by one policy"
    wanted = min(policy.max_replicas, max(policy.min_replicas, math.ceil(messages / policy.target)))
    first_step = min(wanted, policy.min_replicas + policy.scale_up_pods)
    # the count still wanted once half the backlog is gone (drained before the pods come)
    margin = min(policy.max_replicas, math.ceil(messages / 2 / policy.target))
    return {"messages": messages, "consumers": wanted, "first_step": first_step, "margin": margin}


def test_demo_batches_are_what_the_producer_cuts() -> None:
    """The arithmetic above is the batcher's: a read of max_bytes of demo lines is cut into
    exactly max_bytes // line_bytes lines."""
    max_bytes, max_lines = _batch_limits()
    line_bytes = _script_setting("DEMO_LINE_BYTES")
    chunk = _demo_lines(_run_id(), max_bytes // line_bytes + 10)[:max_bytes]
    cut = cut_batch(chunk, max_bytes=max_bytes, max_lines=max_lines)
    assert cut.lines == min(max_lines, max_bytes // line_bytes) and not cut.oversized


def test_demo_makes_the_consumer_count_the_readme_promises() -> None:
    max_bytes, max_lines = _batch_limits()
    lines, line_bytes = _script_setting("DEMO_LINES"), _script_setting("DEMO_LINE_BYTES")
    expected = demo_consumers(lines * line_bytes, line_bytes, max_bytes, max_lines)
    readme = (K8S / "README.md").read_text()
    promised = re.search(r"asks for \*\*(\d+) consumers\*\*", readme)
    assert promised, "k8s/README.md's demo says how many consumers the autoscaler asks for"
    assert int(promised[1]) == expected["consumers"] == expected["first_step"], expected
    assert expected["margin"] == expected["consumers"], "half the backlog still asks for all"
    assert f"{expected['messages']} ready messages" in readme
    assert expected["consumers"] == max(p.max_replicas for p in _policies()), "the whole range"
    assert "seq -f" not in readme


def test_demo_check_compares_exactly_what_the_run_shipped(tmp_path: Path) -> None:
    """`demo-check RUN` passes when every line of the run is in the outputs once, whatever else
    they hold, and fails on a missing or a duplicated line."""
    data, output = tmp_path / "data", tmp_path / "data" / "output"
    output.mkdir(parents=True)
    run = "demo-20260101-000000"
    demo = _demo_lines(run, 1000)
    (data / f"{run}.txt").write_bytes(demo)
    lines = demo.splitlines(keepends=True)
    earlier = b"hello\n" + _demo_lines("demo-20250101-000000", 3)

    def check(*files: bytes) -> subprocess.CompletedProcess[str]:
        for old in output.iterdir():
            old.unlink()
        for index, content in enumerate(files):
            (output / f"logship-consumer-{index}.txt").write_bytes(content)
        env = dict(os.environ, LOGSHIP_DATA_DIR=str(data))
        return subprocess.run(
            ["bash", str(K3D_SCRIPT), "demo-check", run], capture_output=True, text=True, env=env
        )

    ok = check(earlier + b"".join(lines[::2]), b"".join(lines[1::2]) + earlier)
    assert ok.returncode == 0, ok.stderr
    assert "1000 of 1000 lines" in ok.stderr
    assert check(b"".join(lines[1:])).returncode != 0, "a line missing"
    assert check(b"".join(lines), lines[5]).returncode != 0, "a line twice"
    assert check().returncode != 0, "no output at all"


# ---- kubectl apply ------------------------------------------------------------------------------

# Client-side `kubectl apply` (scripts/k3d.sh) keeps each object in the annotation
# kubectl.kubernetes.io/last-applied-configuration, and all annotations of an object together
# may hold 256 KiB (Kubernetes' ValidateAnnotationsSize): a bigger dashboard would be refused.
ANNOTATIONS_LIMIT = 256 * 1024


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_fits_the_last_applied_annotation(overlay: str) -> None:
    for obj in render(f"overlays/{overlay}"):
        size = len(json.dumps(obj, separators=(",", ":")))
        assert size < ANNOTATIONS_LIMIT // 2, f"{obj['kind']}/{obj['metadata']['name']}: {size} B"
