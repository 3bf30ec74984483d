#!/usr/bin/env bash
# logship on a local k3d cluster: create it, build and import the image, install the charts
# (kube-prometheus-stack, KEDA, prometheus-adapter), apply an overlay, drain, tear down.
#
#   scripts/k3d.sh all                 # up + build + monitoring + keda + adapter + apply
#   scripts/k3d.sh up | build | monitoring | keda | adapter | apply [OVERLAY] | drain | status | down
#   scripts/k3d.sh operators && scripts/k3d.sh apply k3d-ha   # a three-node RabbitMQ cluster
#
# OVERLAY is a folder under k8s/overlays (default k3d: one consumer writing ./data/output.txt;
# k3d-keda or k3d-hpa: autoscaled consumers writing ./data/output/<pod>.txt; k3d-ha: the broker
# as three nodes run by the RabbitMQ operators). See k8s/README.md.
# Needs docker, k3d, kubectl and helm on PATH.
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

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'k3d.sh: %s\n' "$*" >&2; exit 1; }

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (see k8s/README.md)"
    done
}

# --version VERSION when one is pinned, nothing otherwise.
chart_version() {
    if [[ -n $1 ]]; then
        printf -- '--version\n%s\n' "$1"
    fi
}

# The pods run as UID 10001 and hostPath folders get no fsGroup: make ./data and ./data/output
# writable for them. The sticky bit keeps one user from removing another's files.
prepare_data_dir() {
    mkdir -p "$DATA_DIR/output"
    chmod 1777 "$DATA_DIR" "$DATA_DIR/output"
    touch "$DATA_DIR/input.txt"
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

cmd_monitoring() {
    need helm kubectl
    helm_repos
    log "installing kube-prometheus-stack into namespace monitoring"
    local -a version
    mapfile -t version < <(chart_version "$KPS_VERSION")
    helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
        --namespace monitoring --create-namespace "${version[@]}" \
        --values "$ROOT/k8s/helm/kube-prometheus-stack.yaml" --wait --timeout 10m
}

cmd_keda() {
    need helm kubectl
    helm_repos
    log "installing KEDA into namespace keda"
    local -a version
    mapfile -t version < <(chart_version "$KEDA_VERSION")
    helm upgrade --install keda kedacore/keda \
        --namespace keda --create-namespace "${version[@]}" \
        --values "$ROOT/k8s/helm/keda.yaml" --wait --timeout 10m
}

cmd_adapter() {
    need helm kubectl
    helm_repos
    log "installing prometheus-adapter into namespace monitoring"
    local -a version
    mapfile -t version < <(chart_version "$ADAPTER_VERSION")
    helm upgrade --install prometheus-adapter prometheus-community/prometheus-adapter \
        --namespace monitoring --create-namespace "${version[@]}" \
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
    local -a version
    mapfile -t version < <(chart_version "$CERT_MANAGER_VERSION")
    helm upgrade --install cert-manager jetstack/cert-manager \
        --namespace cert-manager --create-namespace "${version[@]}" \
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
    local overlay=${1:-k3d}
    local dir="$ROOT/k8s/overlays/$overlay"
    [[ -f $dir/kustomization.yaml ]] || die "no overlay k8s/overlays/$overlay"
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
}

cmd_down() {
    need k3d
    log "deleting cluster $CLUSTER (the files in $DATA_DIR stay)"
    k3d cluster delete "$CLUSTER"
}

cmd_all() {
    cmd_up
    cmd_build
    cmd_monitoring
    cmd_keda
    cmd_adapter
    cmd_apply "${1:-k3d}"
}

main() {
    local command=${1:-}
    [[ $# -gt 0 ]] && shift
    case $command in
        up | build | monitoring | keda | adapter | operators | apply | drain | status | down | all)
            "cmd_$command" "$@"
            ;;
        *)
            sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            [[ -z $command || $command == help || $command == -h ]] || exit 2
            ;;
    esac
}

main "$@"
