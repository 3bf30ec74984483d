# One image, both programs: `logship-consumer` (the default) and `logship-producer`.
#
#   docker build -t logship:dev .
#   docker run --rm logship:dev --help                              # the consumer
#   docker run --rm --entrypoint logship-producer logship:dev --help
#
# Kubernetes sets `command:` explicitly for each program (k8s/base), so the default below only
# matters for `docker run`. Both entrypoints are exec form: the program is PID 1, receives SIGTERM
# itself and drains within its shutdown_timeout (see terminationGracePeriodSeconds in k8s/).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: build logship's wheel and install it with its dependencies into a venv ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/logship

COPY pyproject.toml README.md ./
COPY logship ./logship
COPY producer ./producer
COPY consumer ./consumer
COPY ops ./ops

# Every dependency ships a manylinux wheel, so no compiler is needed even here; `--only-binary`
# makes a missing wheel fail the build instead of silently compiling.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/logship/bin/pip install --only-binary=:all: /wheels/logship-*.whl \
    && /opt/logship/bin/logship-producer --help > /dev/null \
    && /opt/logship/bin/logship-consumer --help > /dev/null \
    && /opt/logship/bin/logship status --help > /dev/null

# ---- final: the venv on a clean slim image, no pip cache, no sources, no build tools ----------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="logship" \
      org.opencontainers.image.description="Tail a file, ship every line through RabbitMQ, append it byte-exact on the other side."

# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it and volumes can be prepared
# for it (runAsUser/fsGroup 10001 in k8s/, LOGSHIP_UID in docker-compose.yaml).
RUN groupadd --system --gid 10001 logship \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin logship \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=builder /opt/logship /opt/logship

ENV PATH=/opt/logship/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /data
USER 10001:10001

# 9101: producer, 9102: consumer — /metrics, /livez, /readyz.
EXPOSE 9101 9102

ENTRYPOINT ["logship-consumer"]
