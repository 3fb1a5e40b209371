#!/usr/bin/env bash
# Long consistency run (issue 6): three regions through the WAN relays
# (200 ms one way), partitions that come and go and delay changes, 9 client
# sessions for 10 minutes at session level; then the history checker's
# report. Arguments go to tests/consistency/workload.py (--help lists them):
#   tests/consistency/long_run.sh                           10 minutes, session level
#   tests/consistency/long_run.sh --minutes 30 --sessions 12 --backend nginx
#   tests/consistency/long_run.sh --level bounded_staleness --staleness 30,1 --p-move 0.03
#   tests/consistency/long_run.sh --seconds 60 --ignore-tokens   (must report violations)
# The binary: $MERIDIAN_BIN, else build/meridian.
# Exit status: 0 no violation, 1 violations (see the report), 2 the run failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 tests/consistency/workload.py "$@"
