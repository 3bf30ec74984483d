#!/usr/bin/env bash
# logship on a local k3d cluster: create it, build and import the image, install the charts,
# apply an overlay, run the autoscaling demo, drain, tear down. Runs on bash 3.2 (macOS) too.
#
#   scripts/k3d.sh all [OVERLAY]       # up + build + monitoring + the overlay's backend + apply
#   scripts/k3d.sh up | build | monitoring | keda | adapter | apply [OVERLAY] | drain | status | down
#   scripts/k3d.sh demo [LINES] | demo-check RUN | pause | resume     # the autoscaling demo
#   scripts/k3d.sh operators && scripts/k3d.sh apply k3d-ha   # a three-node RabbitMQ cluster
#
# OVERLAY is a folder under k8s/overlays (default k3d: one consumer writing ./data/output.txt;
# k3d-keda or k3d-hpa: autoscaled consumers writing ./data/output/<pod>.txt; k3d-ha: the broker
# as three nodes run by the RabbitMQ operators). A cluster has one external-metrics backend: KEDA
# for k3d-keda, prometheus-adapter for k3d-hpa. See k8s/README.md.
# Needs docker, k3d, kubectl and helm on PATH (the demo also awk, sort and cmp).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${LOGSHIP_CLUSTER:-logship}
IMAGE=${LOGSHIP_IMAGE:-logship:dev}
DATA_DIR=${LOGSHIP_DATA_DIR:-$ROOT/data}
NAMESPACE=logship
# Chart versions: empty means the newest; pin them for a reproducible cluster.
KPS_VERSION=${KPS_VERSION:-}
KEDA_VERSION=${KEDA_VERSION:-}
ADAPTER_VERSION=${ADAPTER_VERSION:-}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-}
# Release tags of the RabbitMQ operators (e.g. v2.16.0, v1.17.4): empty means the latest release.
CLUSTER_OPERATOR_VERSION=${CLUSTER_OPERATOR_VERSION:-}
TOPOLOGY_OPERATOR_VERSION=${TOPOLOGY_OPERATOR_VERSION:-}
# The autoscaling demo: DEMO_LINES lines of DEMO_LINE_BYTES bytes = 512 MiB = 512 full batches
# of 1 MiB (8192 lines each), i.e. 512 ready messages, over 250 (5 consumers x 50 messages):
# 6 consumers. tests/unit/test_k8s_rules.py computes that from the manifests.
DEMO_LINES=${LOGSHIP_DEMO_LINES:-4194304}
DEMO_LINE_BYTES=128
# KEDA and prometheus-adapter both register this APIService: one cluster has one of them.
EXTERNAL_METRICS_API=v1beta1.external.metrics.k8s.io

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'k3d.sh: %s\n' "$*" >&2; exit 1; }

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (see k8s/README.md)"
    done
}

# The pods run as UID 10001 and hostPath folders get no fsGroup: make ./data and ./data/output
# writable for them. The sticky bit keeps one user from removing another's files.
prepare_data_dir() {
    mkdir -p "$DATA_DIR/output"
    chmod 1777 "$DATA_DIR" "$DATA_DIR/output"
    touch "$DATA_DIR/input.txt"
}

overlay_dir() {
    local dir="$ROOT/k8s/overlays/$1"
    [[ -f $dir/kustomization.yaml ]] || die "no overlay k8s/overlays/$1"
    printf '%s\n' "$dir"
}

# The external-metrics backend an overlay's autoscaler reads: keda (components/keda, a
# ScaledObject), adapter (components/hpa, an HPA on prometheus-adapter's External metric) or none.
backend_for() {
    local kustomization
    kustomization="$(overlay_dir "$1")/kustomization.yaml"
    if grep -q 'components/keda$' "$kustomization"; then
        echo keda
    elif grep -q 'components/hpa$' "$kustomization"; then
        echo adapter
    else
        echo none
    fi
}

# Who serves the external metrics API now: keda, adapter, none, or namespace/service of another.
external_metrics_owner() {
    local service
    service=$(kubectl get apiservice "$EXTERNAL_METRICS_API" \
        --output 'jsonpath={.spec.service.namespace}/{.spec.service.name}' 2>/dev/null) || service=
    case $service in
        "" | /) echo none ;;
        keda/*) echo keda ;;
        monitoring/prometheus-adapter) echo adapter ;;
        *) echo "$service" ;;
    esac
}

# Refuse to install BACKEND where another one serves the external metrics API: Helm would stop on
# the APIService's ownership, and forced, one of the two autoscalers would never scale.
refuse_second_backend() {
    local owner
    owner=$(external_metrics_owner)
    if [[ $owner != none && $owner != "$1" ]]; then
        die "$EXTERNAL_METRICS_API is served by $owner: a cluster has one external-metrics" \
            "backend (scripts/k3d.sh down, or helm uninstall it, before installing $1)"
    fi
}

cmd_up() {
    need k3d docker kubectl
    prepare_data_dir
    if k3d cluster list "$CLUSTER" >/dev/null 2>&1; then
        log "cluster $CLUSTER exists"
    else
        log "creating cluster $CLUSTER with $DATA_DIR mounted at /var/lib/logship"
        LOGSHIP_DATA_DIR=$(cd "$DATA_DIR" && pwd) \
            k3d cluster create "$CLUSTER" --config "$ROOT/k8s/k3d/cluster.yaml"
    fi
    kubectl config use-context "k3d-$CLUSTER" >/dev/null
}

cmd_build() {
    need docker k3d
    log "building $IMAGE"
    docker build --tag "$IMAGE" "$ROOT"
    log "importing $IMAGE into cluster $CLUSTER"
    k3d image import "$IMAGE" --cluster "$CLUSTER"
}

helm_repos() {
    helm repo add prometheus-community https://prometheus-community.github.io/helm-charts \
        --force-update >/dev/null
    helm repo add kedacore https://kedacore.github.io/charts --force-update >/dev/null
    helm repo add jetstack https://charts.jetstack.io --force-update >/dev/null
    helm repo update >/dev/null
}

# ${VERSION:+--version "$VERSION"}: the flag only when a version is pinned (no array: an empty
# array under `set -u` is an error in bash before 4.4).
cmd_monitoring() {
    need helm kubectl
    helm_repos
    log "installing kube-prometheus-stack into namespace monitoring"
    helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
        --namespace monitoring --create-namespace ${KPS_VERSION:+--version "$KPS_VERSION"} \
        --values "$ROOT/k8s/helm/kube-prometheus-stack.yaml" --wait --timeout 10m
}

cmd_keda() {
    need helm kubectl
    refuse_second_backend keda
    helm_repos
    log "installing KEDA into namespace keda"
    helm upgrade --install keda kedacore/keda \
        --namespace keda --create-namespace ${KEDA_VERSION:+--version "$KEDA_VERSION"} \
        --values "$ROOT/k8s/helm/keda.yaml" --wait --timeout 10m
}

cmd_adapter() {
    need helm kubectl
    refuse_second_backend adapter
    helm_repos
    log "installing prometheus-adapter into namespace monitoring"
    helm upgrade --install prometheus-adapter prometheus-community/prometheus-adapter \
        --namespace monitoring --create-namespace ${ADAPTER_VERSION:+--version "$ADAPTER_VERSION"} \
        --values "$ROOT/k8s/helm/prometheus-adapter.yaml" --wait --timeout 10m
}

# The URL of a file in a GitHub release: the latest one, or the tag given.
release_file() {
    local repo=$1 tag=$2 file=$3
    if [[ -n $tag ]]; then
        printf 'https://github.com/%s/releases/download/%s/%s\n' "$repo" "$tag" "$file"
    else
        printf 'https://github.com/%s/releases/latest/download/%s\n' "$repo" "$file"
    fi
}

# For k8s/overlays/k3d-ha: the RabbitMQ Cluster Operator (RabbitmqCluster) and the Messaging
# Topology Operator (Queue, Exchange, Binding, User, Permission, Vhost, Policy), which needs
# cert-manager for its admission webhooks. All three land in their own namespaces.
cmd_operators() {
    need helm kubectl
    helm_repos
    log "installing cert-manager into namespace cert-manager"
    helm upgrade --install cert-manager jetstack/cert-manager --namespace cert-manager \
        --create-namespace ${CERT_MANAGER_VERSION:+--version "$CERT_MANAGER_VERSION"} \
        --values "$ROOT/k8s/helm/cert-manager.yaml" --wait --timeout 10m
    log "installing the RabbitMQ Cluster Operator into namespace rabbitmq-system"
    kubectl apply --filename \
        "$(release_file rabbitmq/cluster-operator "$CLUSTER_OPERATOR_VERSION" cluster-operator.yml)"
    kubectl --namespace rabbitmq-system rollout status deployment/rabbitmq-cluster-operator \
        --timeout 5m
    log "installing the RabbitMQ Messaging Topology Operator into namespace rabbitmq-system"
    kubectl apply --filename "$(release_file rabbitmq/messaging-topology-operator \
        "$TOPOLOGY_OPERATOR_VERSION" messaging-topology-operator-with-certmanager.yaml)"
    kubectl --namespace rabbitmq-system rollout status deployment/messaging-topology-operator \
        --timeout 5m
}

cmd_apply() {
    need kubectl
    local overlay=${1:-k3d} dir backend owner
    dir=$(overlay_dir "$overlay")
    backend=$(backend_for "$overlay")
    if [[ $backend != none ]]; then
        owner=$(external_metrics_owner)
        [[ $owner == "$backend" ]] || die "overlay $overlay needs $backend serving" \
            "$EXTERNAL_METRICS_API, not $owner: scripts/k3d.sh $backend (on a cluster without" \
            "the other backend)"
    fi
    prepare_data_dir
    log "applying k8s/overlays/$overlay"
    kubectl apply --kustomize "$dir"
    if [[ $overlay == k3d-ha ]]; then
        # the operator creates the nodes' StatefulSet (rabbitmq-server) itself
        kubectl --namespace "$NAMESPACE" wait --for=condition=AllReplicasReady \
            rabbitmqcluster/rabbitmq --timeout 10m
    else
        kubectl --namespace "$NAMESPACE" rollout status statefulset/rabbitmq --timeout 5m
    fi
    kubectl --namespace "$NAMESPACE" rollout status deployment/logship-producer --timeout 5m
    kubectl --namespace "$NAMESPACE" rollout status statefulset/logship-consumer --timeout 5m
    log "ready: echo hello >> $DATA_DIR/input.txt"
}

cmd_drain() {
    need kubectl
    prepare_data_dir
    kubectl --namespace "$NAMESPACE" delete job logship-drain --ignore-not-found
    kubectl apply --kustomize "$ROOT/k8s/overlays/k3d-drain"
    kubectl --namespace "$NAMESPACE" wait --for=condition=complete job/logship-drain --timeout 6h
}

cmd_status() {
    need kubectl
    kubectl --namespace "$NAMESPACE" get pods,statefulsets,deployments,jobs,pvc,hpa
    kubectl --namespace "$NAMESPACE" get scaledobjects 2>/dev/null || true
    kubectl get apiservice "$EXTERNAL_METRICS_API" 2>/dev/null || true
}

cmd_down() {
    need k3d
    log "deleting cluster $CLUSTER (the files in $DATA_DIR stay)"
    k3d cluster delete "$CLUSTER"
}

# One cluster, one external-metrics backend: the one the overlay needs, or none.
cmd_all() {
    local overlay=${1:-k3d} backend
    backend=$(backend_for "$overlay")
    cmd_up
    cmd_build
    cmd_monitoring
    case $backend in
        keda) cmd_keda ;;
        adapter) cmd_adapter ;;
    esac
    cmd_apply "$overlay"
}

# ---- the autoscaling demo ---------------------------------------------------------------------

# Which autoscaler drives the consumers: keda (a ScaledObject), hpa, or none.
autoscaler() {
    if kubectl --namespace "$NAMESPACE" get scaledobject logship-consumer >/dev/null 2>&1; then
        echo keda
    elif kubectl --namespace "$NAMESPACE" get hpa logship-consumer >/dev/null 2>&1; then
        echo hpa
    else
        echo none
    fi
}

# Hold the consumers at 0 so that a backlog builds up: KEDA through its paused-replicas
# annotation, a plain HPA by its target at 0 replicas (an HPA does not scale a target at 0).
cmd_pause() {
    need kubectl
    case $(autoscaler) in
        keda)
            kubectl --namespace "$NAMESPACE" annotate scaledobject logship-consumer \
                autoscaling.keda.sh/paused-replicas=0 --overwrite
            ;;
        hpa) kubectl --namespace "$NAMESPACE" scale statefulset logship-consumer --replicas 0 ;;
        *) die "no autoscaler in namespace $NAMESPACE: apply k3d-keda or k3d-hpa first" ;;
    esac
    # Until the last consumer is gone it still drains what the demo queues.
    kubectl --namespace "$NAMESPACE" wait statefulset/logship-consumer \
        --for=jsonpath='{.status.replicas}'=0 --timeout 5m
}

# Hand the consumers back to the autoscaler.
cmd_resume() {
    need kubectl
    case $(autoscaler) in
        keda)
            kubectl --namespace "$NAMESPACE" annotate scaledobject logship-consumer \
                autoscaling.keda.sh/paused-replicas-
            ;;
        hpa) kubectl --namespace "$NAMESPACE" scale statefulset logship-consumer --replicas 1 ;;
        *) die "no autoscaler in namespace $NAMESPACE: apply k3d-keda or k3d-hpa first" ;;
    esac
}

# COUNT distinct lines of DEMO_LINE_BYTES bytes each, all starting with "RUN ": the run's own
# lines can be told from anything shipped before. Plain awk (no seq -f %g and its 1e+06).
demo_lines() {
    awk -v run="$1" -v count="$2" -v width="$DEMO_LINE_BYTES" 'BEGIN {
        pad = ""
        for (j = length(run) + 13; j < width; j++) pad = pad "."
        for (i = 1; i <= count; i++) printf "%s %010d %s\n", run, i, pad
    }'
}

demo_run_id() { printf 'demo-%s\n' "$(date -u +%Y%m%d-%H%M%S)"; }

# messages_ready of queue `logs`, read inside the broker's pod.
queue_ready() {
    kubectl --namespace "$NAMESPACE" exec rabbitmq-0 -- rabbitmqctl --quiet list_queues \
        --no-table-headers name messages_ready 2>/dev/null | awk '$1 == "logs" { print $2 }'
}

# The demo: consumers held at 0, a run of distinct lines appended to input.txt, wait until the
# producer has published them all, then the autoscaler sees the whole backlog at once.
cmd_demo() {
    need kubectl awk
    local lines=${1:-$DEMO_LINES} run file expected ready last='' still=0 waited=0
    [[ $lines =~ ^[1-9][0-9]*$ ]] || die "LINES must be a positive number, not $lines"
    [[ $(autoscaler) != none ]] || die "apply k3d-keda or k3d-hpa first (scripts/k3d.sh apply k3d-keda)"
    prepare_data_dir
    run=$(demo_run_id)
    file="$DATA_DIR/$run.txt"
    log "writing $lines lines to $file"
    demo_lines "$run" "$lines" >"$file"
    cmd_pause
    expected=$((lines * DEMO_LINE_BYTES / 1048576))
    log "shipping $file: consumers held at 0 until about $expected messages are ready"
    cat "$file" >>"$DATA_DIR/input.txt"
    # Until the run's messages are ready, or the count has stood still for 30 s (the producer
    # cut smaller batches, or was done before the count reached it).
    while :; do
        ready=$(queue_ready) || ready=
        [[ -n $ready && $ready -ge $expected ]] && break
        if [[ -n $ready && $ready -gt 0 && $ready == "$last" ]]; then
            still=$((still + 5))
            [[ $still -lt 30 ]] || break
        else
            still=0
        fi
        last=$ready
        [[ $waited -lt 900 ]] || die "only ${ready:-?} of $expected messages ready after 15 min"
        sleep 5
        waited=$((waited + 5))
    done
    log "$ready messages ready: handing the consumers back to the autoscaler"
    cmd_resume
    log "watch: kubectl -n $NAMESPACE get hpa,statefulset,pods -w"
    log "check: scripts/k3d.sh demo-check $run   (once the queue is empty)"
}

# What this run shipped, compared with exactly what it wrote: every line once, nothing else.
cmd_demo_check() {
    local run=${1:-} file outputs shipped
    [[ -n $run ]] || die "usage: scripts/k3d.sh demo-check RUN (printed by scripts/k3d.sh demo)"
    file="$DATA_DIR/$run.txt"
    [[ -f $file ]] || die "no $file: RUN is the name scripts/k3d.sh demo printed"
    outputs=$(find "$DATA_DIR/output" -name 'logship-consumer-*.txt' -type f | sort)
    [[ -n $outputs ]] || die "no consumer output in $DATA_DIR/output"
    shipped=$(lines_of_run "$run" "$outputs" | wc -l | tr -d ' ')
    log "$shipped of $(wc -l <"$file" | tr -d ' ') lines of $run in $DATA_DIR/output"
    lines_of_run "$run" "$outputs" | LC_ALL=C sort | cmp - <(LC_ALL=C sort "$file") ||
        die "the output differs from $file (still draining? kubectl -n $NAMESPACE get hpa)"
    log "every line of $run shipped exactly once"
}

# The lines of run RUN in FILES (one path a line), whatever else those files hold.
lines_of_run() {
    # shellcheck disable=SC2016 # $0 is awk's, not the shell's
    printf '%s\n' "$2" | tr '\n' '\0' | xargs -0 awk -v prefix="$1 " 'index($0, prefix) == 1'
}

main() {
    local command=${1:-}
    [[ $# -gt 0 ]] && shift
    case $command in
        up | build | monitoring | keda | adapter | operators | apply | drain | status | down | \
            all | demo | pause | resume)
            "cmd_$command" "$@"
            ;;
        demo-check) cmd_demo_check "$@" ;;
        *)
            sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            [[ -z $command || $command == help || $command == -h ]] || exit 2
            ;;
    esac
}

# Sourced (by the tests) it only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
