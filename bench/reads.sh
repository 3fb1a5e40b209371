#!/usr/bin/env bash
# bench/reads.sh: where a read-after-write across regions is served, and what
# it costs, per consistency level, at a 40 ms emulated round trip.
#
# Set-up (all on loopback, all started here, embedded store everywhere)
#   Three meridian processes, one per region: east (id 1, listed first: the
#   hub), west and south (satellites). One container, orders on /orders/, LWW
#   on /version. WAN=star (default), as in bench/replication.sh: each
#   satellite reaches the hub's peer port only through its own WAN relay
#   (tests/wan/wanrelay.py, DELAY_MS one way, default 20 ms, so RTT = 40 ms).
#   Every other peer connection is direct loopback, without delay: the hub's
#   connections to a satellite's peer port, and a satellite's to the other
#   satellite's. Replication only ever uses the satellite -> hub links, but
#   reads are forwarded on any of them: a session read forwarded from south
#   to west (the write's origin), or from east to west, crosses no relay and
#   costs ~1 ms here, where a real WAN would charge a round trip. WAN=mesh
#   puts a relay on every directed peer link (six) instead, so that every
#   forward pays the RTT too.
#
# Workload (bench/reads/readsclient.py, see its header)
#   CLIENTS threads loop without pause: PUT /orders/ID in a home region (no
#   token: a session starts with its write), then at once GET it in another
#   region: at session level with the write's X-Session-Token, or at
#   eventual or bounded_staleness without a token. The home region and the
#   reading region rotate over the six directed pairs, the level over the
#   levels of the cluster, so every level sees the same mix. Half the
#   writes create a document, the others update one written >= 1 s before.
#   Two clusters, one after the other (CLUSTERS), each fresh, each measured
#   for DURATION s after WARMUP s:
#     session  account.consistency: session (the default); levels session
#              (the account default, no header) and eventual (relaxed).
#     bounded  account.consistency: bounded_staleness with
#              max_lag_versions STALE_VERSIONS, max_lag_seconds
#              STALE_SECONDS; levels bounded_staleness (the default),
#              session and eventual (relaxed). At this level satellites
#              also refuse writes (429) while their own unconfirmed backlog
#              is over the bound: counted, then the client sleeps
#              Retry-After (at most 1 s) and goes on.
#   account.session_wait_ms is SESSION_WAIT_MS in both (default 1000, the
#   node's default).
#
# Read the output (one table per cluster)
#   level       the read's level; "(default)": the account's, sent without
#               X-Consistency-Level
#   reads       reads measured (each one a read-after-write across regions)
#   local / waited / fwd / refused
#               shares of those reads served at once by the reading region,
#               by the reading region after waiting for apply (session),
#               by another region over the peer port, refused (404 with
#               X-Meridian-Substatus: 1002; for bounded, 503). From the
#               difference of meridian_reads_total{level,served} over the run,
#               summed over the three regions (a region that answers a read
#               forwarded to it counts it as served="for_peer", left out
#               here, so each client read counts once). Cross-checked
#               with the client's own count and X-Meridian-Served-By: any
#               difference is printed with "!".
#   p50..max    read latency at the client (send to full answer), ms
#   missed      reads that did not return the write just made: 404 (the
#               document is not there yet) or an older version. For eventual
#               and bounded that is expected, and the point of session
#               tokens; for session it is a violation and is flagged.
#   per pair    p50/p99 per (write region -> read region): east -> west is
#               hub -> satellite (one WAN hop for the decision), west -> east
#               satellite -> hub (one hop), west -> south satellite ->
#               satellite (two hops: ship to the hub, then the hub's log).
#   metrics deltas  the raw counts per region, before the correction above.
# The closing summary prints per level p99 / RTT and the p50 / p99 ratios to
# eventual in the same cluster (the price of reading your own write).
#   Calibration: before the clusters, 50 echo round trips through a fresh
#   relay with the same delay: the emulator's own cost (Python, a loaded
#   machine), which every WAN hop above includes.
#
# CPU placement (PIN=1, two or more CPUs)
#   The three meridians share the last CPU (NODE_CPUS); the client and the
#   relays (Python) share the others (LOAD_CPUS). The load is light (tens of
#   requests per second per client): latency, not throughput, is measured;
#   pinning keeps the nodes from queueing behind the Python processes.
#
# Environment
#   DURATION        measured seconds per cluster (default 20)
#   WARMUP          discarded seconds per cluster before it (default 3)
#   CLIENTS         client threads (default 8)
#   DELAY_MS        one-way WAN delay (default 20)
#   WAN             star (default) or mesh, see above
#   CLUSTERS        "session bounded" (default), or one of them
#   SESSION_WAIT_MS account.session_wait_ms (default 1000; 0: forward at once)
#   STALE_VERSIONS  bounded_staleness.max_lag_versions (default 100)
#   STALE_SECONDS   bounded_staleness.max_lag_seconds (default 1, the least)
#   DOC_BYTES       document size (default 512)
#   CALIBRATE       1 (default): time the relay alone first; 0: skip
#   PIN             1 (default) or 0;  NODE_CPUS, LOAD_CPUS: taskset CPU lists
#   MERIDIAN_BIN    meridian binary (default <repo>/build/meridian, built with
#                   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2
#                   when missing)
#   KEEP_TMP        1 keeps the scratch directory (configs, logs, JSON)
#
# Usage: bench/reads.sh                          (from any directory, ~1 min)
#        DURATION=60 CLIENTS=12 bench/reads.sh   (steadier p99)
#        WAN=mesh bench/reads.sh                 (every peer link delayed)
# It prints; it does not judge: the exit status is 0 unless the harness
# itself cannot run.

set -u -o pipefail

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CLIENTS=${CLIENTS:-8}
DELAY_MS=${DELAY_MS:-20}
WAN=${WAN:-star}
CLUSTERS=${CLUSTERS:-"session bounded"}
SESSION_WAIT_MS=${SESSION_WAIT_MS:-1000}
STALE_VERSIONS=${STALE_VERSIONS:-100}
STALE_SECONDS=${STALE_SECONDS:-1}
DOC_BYTES=${DOC_BYTES:-512}
CALIBRATE=${CALIBRATE:-1}
PIN=${PIN:-1}
KEEP_TMP=${KEEP_TMP:-0}
PY=/usr/bin/python3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/bench/reads"
RELAY="$ROOT/tests/wan/wanrelay.py"
CLIENT="$HERE/readsclient.py"
REPLCLIENT="$ROOT/bench/replication/replclient.py"   # ports, drain, relay-rtt

BENCH=reads
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

for v in DURATION WARMUP CLIENTS SESSION_WAIT_MS STALE_VERSIONS STALE_SECONDS DOC_BYTES; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[[ $DELAY_MS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "DELAY_MS must be a number"
(( DURATION > 0 && CLIENTS > 0 && STALE_VERSIONS > 0 && STALE_SECONDS > 0 )) ||
    die "DURATION, CLIENTS, STALE_VERSIONS and STALE_SECONDS must be positive"
(( SESSION_WAIT_MS <= 60000 )) || die "SESSION_WAIT_MS is at most 60000"
[[ $WAN == star || $WAN == mesh ]] || die "WAN must be star or mesh, got '$WAN'"
for c in $CLUSTERS; do
    [[ $c == session || $c == bounded ]] || die "CLUSTERS: unknown cluster '$c' (session, bounded)"
done
[[ -n ${CLUSTERS// /} ]] || die "CLUSTERS is empty"
command -v curl >/dev/null || die "curl not found"
[[ -x $PY ]] || die "$PY not found"
[[ -f $RELAY ]] || die "WAN relay $RELAY not found"
[[ -f $REPLCLIENT ]] || die "$REPLCLIENT not found"

# ---------------------------------------------------------------- meridian

bench_binary

# ---------------------------------------------------------------- processes

bench_scratch
if bench_pin NODE_CPUS; then
    PLACEMENT="pinned: the three meridians on CPU $NODE_CPUS; client and relays on CPU $LOAD_CPUS"
else
    PLACEMENT="not pinned (PIN=$PIN, $NCPU CPUs)"
fi

REGIONS=(east west south)   # east: the hub
RTT_MS=$(awk "BEGIN{print 2*$DELAY_MS}")

health() { [[ $(curl -s -o /dev/null -w '%{http_code}' "$1/_meridian/health") == 200 ]]; }

# peer_port FROM TO: the port FROM's configuration names for TO's peer port
peer_port() {
    local v
    if [[ $1 == "$2" ]]; then v=Q_$2
    elif [[ $WAN == mesh ]]; then v=R_$1_$2
    elif [[ $2 == east ]]; then v=R_$1_east
    else v=Q_$2
    fi
    echo "${!v}"
}

write_config() {  # write_config DIR NODE CONSISTENCY
    local dir=$1 node=$2 cons=$3
    cat >"$dir/$node.yaml" <<EOF
# bench/reads.sh, generated
account:
  multi_region_writes: true
  consistency: $cons
  session_wait_ms: $SESSION_WAIT_MS
  bounded_staleness: { max_lag_versions: $STALE_VERSIONS, max_lag_seconds: $STALE_SECONDS }
regions:
  - { name: east,  id: 1, listen: 127.0.0.1:$P_east,  peer_listen: 127.0.0.1:$(peer_port "$node" east),  backend: embedded, data_dir: $dir/data/east }
  - { name: west,  id: 2, listen: 127.0.0.1:$P_west,  peer_listen: 127.0.0.1:$(peer_port "$node" west),  backend: embedded, data_dir: $dir/data/west }
  - { name: south, id: 3, listen: 127.0.0.1:$P_south, peer_listen: 127.0.0.1:$(peer_port "$node" south), backend: embedded, data_dir: $dir/data/south }
containers:
  - { name: orders, route: /orders/, partition_key: /tenantId, conflict_resolution: { mode: last_writer_wins, path: /version } }
log: { level: warn, access: false }
EOF
}

RELAY_LINKS=()   # "FROM TO" of every relay of the running cluster
start_relay() {  # start_relay DIR FROM TO
    local out="$1/relay-$2-$3"
    local q=Q_$3
    "${ON_LOAD[@]}" "$PY" "$RELAY" --listen "127.0.0.1:$(peer_port "$2" "$3")" --target "127.0.0.1:${!q}" \
        --delay-ms "$DELAY_MS" >"$out.out" 2>"$out.err" &
    PIDS+=($!)
    RELAY_LINKS+=("$2 $3")
}
start_meridian() {  # start_meridian DIR NAME
    "${ON_NODE[@]}" "$MERIDIAN_BIN" --config "$1/$2.yaml" --region "$2" >"$1/$2.log" 2>&1 &
    PIDS+=($!)
}
wait_meridian() {  # wait_meridian DIR NAME
    local u=P_$2
    for _ in $(seq 100); do health "http://127.0.0.1:${!u}" && return 0; sleep 0.1; done
    warn "meridian $2 did not answer /_meridian/health; its log:"
    tail -n 20 "$1/$2.log" >&2
    KEEP_TMP=1
    exit 1
}

start_cluster() {  # start_cluster DIR CONSISTENCY
    local dir=$1 cons=$2 r a b n link
    [[ $WAN == mesh ]] && n=12 || n=8
    mapfile -t PORTS < <("$PY" "$REPLCLIENT" ports "$n") && (( ${#PORTS[@]} == n )) || die "no free ports"
    # read indirectly, by name (peer_port, url, start_relay)
    # shellcheck disable=SC2034
    P_east=${PORTS[0]} P_west=${PORTS[1]} P_south=${PORTS[2]}
    # shellcheck disable=SC2034
    Q_east=${PORTS[3]} Q_west=${PORTS[4]} Q_south=${PORTS[5]}
    if [[ $WAN == mesh ]]; then
        local i=6
        for a in "${REGIONS[@]}"; do
            for b in "${REGIONS[@]}"; do
                [[ $a == "$b" ]] && continue
                eval "R_${a}_${b}=${PORTS[i]}"
                i=$((i + 1))
            done
        done
    else
        # shellcheck disable=SC2034
        R_west_east=${PORTS[6]} R_south_east=${PORTS[7]}
    fi
    mkdir -p "$dir/data"
    for r in "${REGIONS[@]}"; do write_config "$dir" "$r" "$cons"; done
    RELAY_LINKS=()
    # the hub first, so that the satellites find it at once
    start_meridian "$dir" east
    wait_meridian "$dir" east
    if [[ $WAN == mesh ]]; then
        for a in "${REGIONS[@]}"; do
            for b in "${REGIONS[@]}"; do [[ $a == "$b" ]] || start_relay "$dir" "$a" "$b"; done
        done
    else
        start_relay "$dir" west east
        start_relay "$dir" south east
    fi
    for link in "${RELAY_LINKS[@]}"; do
        set -- $link
        for _ in $(seq 100); do [[ -s $dir/relay-$1-$2.out ]] && break; sleep 0.1; done
        [[ -s $dir/relay-$1-$2.out ]] || { cat "$dir/relay-$1-$2.err" >&2; die "relay $1 -> $2 did not start"; }
    done
    start_meridian "$dir" west
    start_meridian "$dir" south
    wait_meridian "$dir" west
    wait_meridian "$dir" south
}

stop_cluster() {
    (( ${#PIDS[@]} )) && stop_pids "${PIDS[@]}"
    PIDS=()
}

url() { local p=P_$1; echo "http://127.0.0.1:${!p}"; }

cpu_ticks() {  # "busy total" jiffies of every CPU, one pair per CPU, from /proc/stat
    awk '$1 ~ /^cpu[0-9]+$/ { t = 0; for (i = 2; i <= NF; i++) t += $i; printf "%d %d ", t - $5 - $6, t }' /proc/stat
}
cpu_busy() {  # cpu_busy "BEFORE" "AFTER" -> "cpu0 93% cpu1 41%"
    awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x); split(b, y)
        for (i = 1; i < n; i += 2) { d = y[i + 1] - x[i + 1]
            printf "%scpu%d %.0f%%", (i > 1 ? "  " : ""), (i - 1) / 2, (d > 0 ? 100 * (y[i] - x[i]) / d : 0) } }'
}

# ---------------------------------------------------------------- run

say "meridian reads benchmark  $(date -u '+%Y-%m-%d %H:%M:%SZ')"
say "binary   $MERIDIAN_BIN $BUILD_NOTE"
say "regions  east (hub), west and south (satellites); embedded store; /orders/ LWW on /version"
if [[ $WAN == mesh ]]; then
    say "WAN      mesh: every directed peer link through a wanrelay, ${DELAY_MS} ms one way (RTT ${RTT_MS} ms)"
else
    say "WAN      star: satellites -> hub through a wanrelay each, ${DELAY_MS} ms one way (RTT ${RTT_MS} ms);"
    say "         hub -> satellite and satellite <-> satellite peer links are direct loopback"
    say "         (replication does not use them; forwarded reads do, and pay no WAN delay there)"
fi
say "CPU      $NCPU CPUs, $PLACEMENT"
say "load     $CLIENTS clients, write in one region then read it at once in another,"
say "         ${WARMUP} s warm-up + ${DURATION} s per cluster; session_wait_ms ${SESSION_WAIT_MS}"

if [[ $CALIBRATE == 1 ]]; then
    run_fg "${ON_LOAD[@]}" "$PY" "$REPLCLIENT" relay-rtt --relay "$RELAY" --delay-ms "$DELAY_MS" \
        --samples 50 >"$TMP/relay-rtt.out" 2>&1
    cal=$(cat "$TMP/relay-rtt.out")
    if [[ $cal == relay-rtt* ]]; then
        set -- $cal
        say "relay    alone, 50 echo round trips: RTT p50 $2 ms  p99 $3 ms  max $4 ms  (nominal $RTT_MS ms)"
    else
        say "relay    ! calibration failed: $cal"
    fi
fi

JSONS=()
for cl in $CLUSTERS; do
    dir="$TMP/$cl"
    mkdir -p "$dir"
    if [[ $cl == session ]]; then
        cons=session levels=session,eventual
        say ""
        say "cluster session: account.consistency session"
    else
        cons=bounded_staleness levels=bounded_staleness,session,eventual
        say ""
        say "cluster bounded: account.consistency bounded_staleness" \
            "(max_lag_versions $STALE_VERSIONS, max_lag_seconds $STALE_SECONDS)"
    fi
    start_cluster "$dir" "$cons"
    run_fg "$PY" "$REPLCLIENT" drain --timeout 30 --region "east=$(url east)" \
        --region "west=$(url west)" --region "south=$(url south)" >"$dir/drain.out"
    t0=$(cpu_ticks)
    run_fg "${ON_LOAD[@]}" "$PY" "$CLIENT" run \
        --region "east=$(url east)" --region "west=$(url west)" --region "south=$(url south)" \
        --levels "$levels" --default-level "$cons" --clients "$CLIENTS" \
        --duration "$DURATION" --warmup "$WARMUP" --bytes "$DOC_BYTES" --rtt-ms "$RTT_MS" \
        --wait-ms "$SESSION_WAIT_MS" --label "cluster $cl" --tag "$cl" --out "$dir/result.json" ||
        say "    ! the client failed"
    say "    CPUs busy during warm-up and run (every process, other sessions' too): $(cpu_busy "$t0" "$(cpu_ticks)")"
    [[ -s $dir/result.json ]] && JSONS+=("$dir/result.json")
    run_fg "$PY" "$REPLCLIENT" drain --timeout 30 --region "east=$(url east)" \
        --region "west=$(url west)" --region "south=$(url south)" >"$dir/drain.out"
    d=$(cat "$dir/drain.out")
    [[ $d == drained* ]] || say "    ! replication not quiet 30 s after the run: ${d#* * }"
    # what the nodes logged (level warn and above)
    for r in "${REGIONS[@]}"; do
        n=$(grep -c . "$dir/$r.log" 2>/dev/null)
        if (( n > 0 )); then
            say "    log $r: $n lines, e.g.:"
            sed -E 's/^[^ ]+ //' "$dir/$r.log" | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/      /'
        fi
    done
    stop_cluster
done

if (( ${#JSONS[@]} )); then
    say ""
    say "summary (RTT ${RTT_MS} ms, WAN $WAN)"
    "$PY" "$CLIENT" summary --rtt-ms "$RTT_MS" "${JSONS[@]}"
fi
exit 0
