#!/usr/bin/env bash
# Find the RabbitMQ broker on 127.0.0.1:5672, or start the installed one; fail clearly otherwise.
set -euo pipefail
host=${LOGSHIP_BROKER_HOST:-127.0.0.1}
port=${LOGSHIP_BROKER_PORT:-5672}

reachable() {
  timeout 2 bash -c "exec 3<>/dev/tcp/${host}/${port}" 2>/dev/null
}

if reachable; then
  exit 0
fi
if command -v rabbitmq-server >/dev/null 2>&1; then
  echo "broker: not reachable on ${host}:${port}, starting rabbitmq-server" >&2
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    if reachable; then
      echo "broker: up on ${host}:${port}" >&2
      exit 0
    fi
    sleep 1
  done
fi
echo "broker: RabbitMQ is not reachable on ${host}:${port}" \
  "(install rabbitmq-server, or run: docker run -p 5672:5672 rabbitmq:3)" >&2
exit 1
