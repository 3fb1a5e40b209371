#!/usr/bin/env bash
# Stops the regions started by deploy/local/start.sh (SIGTERM: each drains
# its in-flight requests, then exits).
set -uo pipefail
cd "$(dirname "$0")/../.."
for region in east west south; do
  f="run/$region.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $region (pid $pid)"
  fi
  rm -f "$f"
done
