#!/usr/bin/env bash
# Stops the regions started by deploy/local/start.sh, and regions added as
# the README shows (SIGTERM: each drains its in-flight requests, then exits).
set -uo pipefail
cd "$(dirname "$0")/../.."
for f in run/*.pid; do                 # the three regions, and any added since
  [ -f "$f" ] || continue
  region=$(basename "$f" .pid)
  pid=$(cat "$f")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $region (pid $pid)"
  fi
  rm -f "$f"
done
