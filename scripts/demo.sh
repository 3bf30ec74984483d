#!/usr/bin/env bash
# Run producer and consumer side by side: every line appended to ./input.txt lands in ./output.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
touch input.txt
export LOGSHIP_LOG__FORMAT=${LOGSHIP_LOG__FORMAT:-text}
$py -m consumer --output output.txt --http.port 9102 &
consumer=$!
$py -m producer --input input.txt --checkpoint logship-producer.checkpoint --http.port 9101 &
producer=$!
trap 'kill -TERM $producer $consumer 2>/dev/null; wait' INT TERM EXIT
cat <<MSG

  logship demo is running. In another terminal:
      echo hi >> input.txt && sleep 1 && tail -n1 output.txt
  metrics: http://127.0.0.1:9101/metrics (producer), http://127.0.0.1:9102/metrics (consumer)
  Ctrl-C stops both (gracefully).

MSG
wait -n "$producer" "$consumer"
