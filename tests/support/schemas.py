"""Where the third-party CRD schemas (prometheus-operator, KEDA, RabbitMQ operators) that the
manifest tests validate against are found, and what to say when they are not there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))
# default: the shared/ folder the repository sits beside on developer machines and in CI
DEFAULT_CRDS = REPO.parent / "shared" / "schemas" / "crds"


def crd_dir() -> Path:
    """LOGSHIP_CRD_SCHEMAS, or shared/schemas/crds beside the repository."""
    configured = os.environ.get("LOGSHIP_CRD_SCHEMAS")
    return Path(configured) if configured else DEFAULT_CRDS


def how_to_get() -> str:
    return (
        f"no CRD schemas at {crd_dir()}: put the upstream CRD files there (prometheus-operator "
        "example/prometheus-operator-crd, kedacore/keda config/crd/bases, rabbitmq cluster- and "
        "messaging-topology-operator config/crd/bases) or point LOGSHIP_CRD_SCHEMAS at a folder "
        "holding them"
    )


def require_crds() -> Path:
    """The CRD folder; a skip saying how to get it on a laptop, a failure in CI."""
    folder = crd_dir()
    if not folder.is_dir():
        if IN_CI:
            pytest.fail(how_to_get() + " (CI must have them)")
        pytest.skip(how_to_get())
    return folder
