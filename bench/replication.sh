#!/usr/bin/env bash
# bench/replication.sh: what multi-region replication costs a satellite, and
# how long a satellite's write takes to be applied in every region.
#
# Set-up (all on loopback, all started here, embedded store everywhere)
#   Three meridian processes, one per region: east (id 1, listed first: the
#   hub), west and south (satellites). One container, orders on /orders/, LWW
#   on /version. Each satellite reaches the hub's peer port only through its
#   own WAN relay (tests/wan/wanrelay.py, DELAY_MS one way, default 20 ms, so
#   RTT = 2 x DELAY_MS = 40 ms): the satellite's config names the relay's
#   address as the hub's peer_listen; everything else in the three configs is
#   identical. The delay is on for both parts below.
#
# (a) Throughput: replicated PUTs at a satellite vs replication off
#   wrk (THREADS threads, CONNECTIONS connections, DURATION s, bench/replication/
#   put.lua) PUTs 1 KiB JSON documents, a new id per request, to the
#   satellite west:
#     plain   PUT /plain/ID   outside every container route: passed straight
#             to the same embedded store, no journal, no replication
#             ("the same node with replication off");
#     orders  PUT /orders/ID  the container: tagged, journaled (LMDB, group
#             commit), written, acknowledged, shipped to the hub, confirmed,
#             and applied in every region.
#   The two targets are interleaved for ROUNDS rounds (the order alternates
#   each round); after every orders run the script waits until replication
#   is quiet again (no tentative backlog, no lag, every region has applied
#   the same number of confirmed-log entries) and prints how long that took,
#   so the next run starts clean.
#   Figures are medians over the rounds.
#   Read:   ratio req/s = orders / plain   (target >= 0.80x)
#           p99 of each (from wrk --latency; closed loop, so under saturation
#           it is mostly queueing: compare the two, not against a budget)
#           per satellite core = ratio of the satellite's CPU time per
#           request (plain / orders), from /proc/PID/stat: what the ratio
#           would be if the satellite were CPU-bound on a core of its own and
#           the rest of the cluster were on other machines.
#   Each run line shows req/s, p99, west's CPU time per request ("us/req"),
#   each process's CPU use during the run in % of one core (west, east,
#   south, both relays together) and, when pinned, how busy the two CPU sets
#   were ("core sat/load", from /proc/stat, every process on the machine
#   counted, other sessions' too). West well below 100% means the satellite
#   was not CPU-bound: it waited (fsyncs, queues), so the req/s ratio is a
#   latency ratio at CONNECTIONS concurrent writers. Then west's group
#   commit: "disk" is KiB written to the scratch directory's block device
#   per request (/sys/class/block/DEV/stat, so every process writing that
#   device counts: with PEER_DATA=same, east's and south's writes too); "in
#   west" the mean time from a request's first byte to its answer inside
#   west (meridian_request_duration_seconds); then requests per fsync, ms
#   per fsync and transactions per fsync of west's syncer, and ms per
#   commit (page writes and the data pages' fsync) of its committer
#   (meridian_commit_*). At a fixed number of connections, req/s is about
#   CONNECTIONS / (time in west + time outside it: wrk, loopback).
#   After each orders run:
#   how far east and south lagged when wrk stopped (meridian_region_lag_ms,
#   meridian_applied_total) and how long they took to catch up.
#
# (b) Acknowledgement -> applied in every region, at 40 ms RTT
#   bench/replication/replclient.py writes SAMPLES documents to west, one at
#   a time and spaced apart (no load), notes when each 2xx answer arrives,
#   and polls GET on east and south (POLLERS threads each, every POLL_MS)
#   until both return X-Meridian-Version equal to the write's version.
#   Read:   p50 / p99 of (applied everywhere - ack), and
#           ratio = p99 / (1.2 x RTT + 5 ms)   (target <= 1.00x)
#   The poll resolution (~POLL_MS / POLLERS plus one loopback GET) makes the
#   figures slight over-estimates. Cross-check: each region's own histogram
#   meridian_replication_seconds{source="west"} over the same writes (from
#   the write's HLC at the origin, i.e. slightly before the ack, to the
#   apply; bucket bounds 25/50/100 ms, so the p99 is a coarse interpolation).
#   Calibration: before the samples, the relay alone is timed (100 echo
#   round trips through a fresh relay process with the same delay and CPU
#   placement): its excess over the nominal RTT is the emulator's own cost
#   on this machine at that moment (Python, a loaded 2-core box), which the
#   ack -> applied figures include on both hops.
#   (b) runs first, on the fresh cluster, then (a).
#
# CPU placement (2-core machine; PIN=0 turns it off)
#   wrk, three meridians and two Python relays share two cores. With PIN=1
#   the satellite under test (west) gets the last CPU to itself (SAT_CPUS);
#   wrk, the hub, the other satellite and the relays share the rest
#   (LOAD_CPUS, CPU 0 on two cores). This keeps the node being measured on
#   the same core, uncontended, in both targets; the price is that in the
#   orders runs the load core also carries the hub's and south's apply work
#   and the relays, which the plain runs do not have, so when the load core
#   is the one near 100% ("core ... load" on each run line) the req/s ratio is
#   limited by the 2-core box rather than by the satellite, and the
#   "per satellite core" ratio is the fairer figure. PIN=0 leaves it to the
#   scheduler: then the ratio measures the CPU of the whole cluster per
#   write against one node's pass-through, which is noisier and harsher.
#   The (b) client is not pinned; there is no load during (b).
#   East, south and the relays stand in for other machines: they run at
#   nice PEER_NICE (default 10), wrk at the default priority. On the shared
#   core the scheduler (EEVDF on this kernel) otherwise lets a peer that is
#   applying a batch run out its time slice while wrk, woken by an answer,
#   waits for the core: that wait is added to the cycle of every replicated
#   request and to no plain one, and it is the 2-core box's, not the
#   satellite's. Lower priority does not hide their cost: they still have to
#   keep up, and every orders run line is followed by how far they lagged
#   and how long they took to catch up. PEER_NICE=0 gives everything the same
#   priority (sessions 1-6 measured that way); session 7 measured both.
#
# Caveats
#   - A shared machine: other sessions' builds and tests run on it. Trust
#     medians, look at the spread, compare figures within one run only.
#   - Loopback, no TLS, 1 KiB bodies, embedded store; the WAN relay is a
#     user-space Python relay (fixed delay, no loss, no bandwidth limit).
#   - An existing build/meridian is used as it is; the header line shows its
#     build type (a Debug or sanitizer build's figures mean little).
#
# Environment
#   DURATION     seconds per wrk run (default 10)
#   ROUNDS       rounds of (plain, orders) (default 3)
#   WARMUP       seconds of discarded warm-up per target (default 2; 0: none)
#   CONNECTIONS  wrk connections (default 32)
#   THREADS      wrk threads (default 1)
#   SAMPLES      writes measured in (b) (default 200)
#   POLL_MS      poll interval of each poller in (b) (default 2)
#   POLLERS      pollers per region in (b) (default 3)
#   SPACING_MS   mean pause between (b) writes (default 60)
#   DELAY_MS     one-way WAN delay satellite <-> hub (default 20)
#   PARTS        "a b" (default), or just "a" or "b"
#   PIN          1 (default) or 0;  SAT_CPUS, LOAD_CPUS: taskset CPU lists
#   PEER_NICE    nice value of east, south and the relays (default 10; 0: as wrk)
#   MERIDIAN_BIN meridian binary (default <repo>/build/meridian, built with
#                cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2
#                when missing)
#   KEEP_TMP     1 keeps the scratch directory (configs, logs, wrk output)
#   PEER_DATA    where east's and south's data directories live: a
#                directory on another device (default /dev/shm when it is a
#                writable directory, else "same") or "same" (beside west's,
#                on one disk). West is the region measured; on a real
#                deployment the other regions sync their own disks, not
#                west's. On one disk they write twice what west does (each
#                stores every document, and the hub its log) and their
#                fsyncs queue with west's: with ext4's ordered journal, a
#                file that grows makes an fsync commit the journal, which
#                flushes the others' new blocks too; west's p99 then reaches
#                100-400 ms in some orders runs. Session 7 made /dev/shm the
#                default (before: "same") and measured both.
#
# Usage: bench/replication.sh                   (from any directory)
#        DURATION=5 ROUNDS=1 SAMPLES=50 bench/replication.sh   (quick look)
# It prints; it does not judge: the exit status is 0 unless the harness
# itself cannot run.

set -u -o pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
SAMPLES=${SAMPLES:-200}
POLL_MS=${POLL_MS:-2}
POLLERS=${POLLERS:-3}
SPACING_MS=${SPACING_MS:-60}
DELAY_MS=${DELAY_MS:-20}
PARTS=${PARTS:-"a b"}
PIN=${PIN:-1}
KEEP_TMP=${KEEP_TMP:-0}
if [[ -z ${PEER_DATA:-} ]]; then
    if [[ -d /dev/shm && -w /dev/shm ]]; then PEER_DATA=/dev/shm; else PEER_DATA=same; fi
fi
PEER_NICE=${PEER_NICE:-10}
DOC_BYTES=1024
PY=/usr/bin/python3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/bench/replication"
RELAY="$ROOT/tests/wan/wanrelay.py"
CLIENT="$HERE/replclient.py"

BENCH=replication
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

for v in DURATION ROUNDS WARMUP CONNECTIONS THREADS SAMPLES POLLERS PEER_NICE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[[ $POLL_MS =~ ^[0-9]+(\.[0-9]+)?$ && $DELAY_MS =~ ^[0-9]+(\.[0-9]+)?$ &&
   $SPACING_MS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "POLL_MS, DELAY_MS and SPACING_MS must be numbers"
(( DURATION > 0 && ROUNDS > 0 && CONNECTIONS >= THREADS && THREADS > 0 && POLLERS > 0 )) ||
    die "DURATION, ROUNDS, THREADS, POLLERS must be positive and CONNECTIONS >= THREADS"
command -v wrk >/dev/null || die "wrk not found (apt-get install wrk)"
command -v curl >/dev/null || die "curl not found"
[[ -x $PY ]] || die "$PY not found"
[[ -f $RELAY ]] || die "WAN relay $RELAY not found"

# ---------------------------------------------------------------- meridian

bench_binary

# ---------------------------------------------------------------- processes

bench_scratch
if bench_pin SAT_CPUS; then
    ON_SAT=("${ON_NODE[@]}")
    PLACEMENT="pinned: west on CPU $SAT_CPUS; wrk, east, south, relays on CPU $LOAD_CPUS"
else
    ON_SAT=()
    PLACEMENT="not pinned (PIN=$PIN, $NCPU CPUs)"
fi
# the processes that stand in for other machines: east, south, the relays
ON_PEER=("${ON_LOAD[@]}")
if (( PEER_NICE > 0 )); then
    ON_PEER+=(nice -n "$PEER_NICE")
    PLACEMENT+="; east, south, relays at nice $PEER_NICE"
fi

mapfile -t PORTS < <("$PY" "$CLIENT" ports 8) && (( ${#PORTS[@]} == 8 )) || die "no free ports"
P_EAST=${PORTS[0]} P_WEST=${PORTS[1]} P_SOUTH=${PORTS[2]}
Q_EAST=${PORTS[3]} Q_WEST=${PORTS[4]} Q_SOUTH=${PORTS[5]}
R_WEST=${PORTS[6]} R_SOUTH=${PORTS[7]}     # the relays in front of east's peer port
URL_EAST=http://127.0.0.1:$P_EAST URL_WEST=http://127.0.0.1:$P_WEST URL_SOUTH=http://127.0.0.1:$P_SOUTH

write_config() {  # write_config FILE HUB_PEER_PORT
    cat >"$1" <<EOF
# bench/replication.sh, generated
account: { multi_region_writes: true, consistency: session }
regions:
  - { name: east,  id: 1, listen: 127.0.0.1:$P_EAST,  peer_listen: 127.0.0.1:$2, backend: embedded, data_dir: $PEER_DIR/east }
  - { name: west,  id: 2, listen: 127.0.0.1:$P_WEST,  peer_listen: 127.0.0.1:$Q_WEST, backend: embedded, data_dir: $TMP/data/west }
  - { name: south, id: 3, listen: 127.0.0.1:$P_SOUTH, peer_listen: 127.0.0.1:$Q_SOUTH, backend: embedded, data_dir: $PEER_DIR/south }
containers:
  - { name: orders, route: /orders/, partition_key: /tenantId, conflict_resolution: { mode: last_writer_wins, path: /version } }
log: { level: warn, access: false }
EOF
}
mkdir -p "$TMP/data"
if [[ $PEER_DATA == same ]]; then
    PEER_DIR=$TMP/data
else
    PEER_DIR=$(mktemp -d "$PEER_DATA/meridian-peers.XXXXXX") || die "cannot make a directory in PEER_DATA=$PEER_DATA"
    SCRATCH_MORE+=("$PEER_DIR")
fi
write_config "$TMP/east.yaml"  "$Q_EAST"
write_config "$TMP/west.yaml"  "$R_WEST"
write_config "$TMP/south.yaml" "$R_SOUTH"

start_relay() {  # start_relay NAME LISTEN_PORT
    "${ON_PEER[@]}" "$PY" "$RELAY" --listen "127.0.0.1:$2" --target "127.0.0.1:$Q_EAST" \
        --delay-ms "$DELAY_MS" >"$TMP/relay-$1.out" 2>"$TMP/relay-$1.err" &
    PIDS+=($!)
    eval "PID_RELAY_$1=$!"
}
start_meridian() {  # start_meridian NAME SAT|PEER
    local pfx="ON_$2[@]"
    "${!pfx}" "$MERIDIAN_BIN" --config "$TMP/$1.yaml" --region "$1" >"$TMP/$1.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$1=$!"
}
relay_up() { [[ -s $TMP/relay-$1.out ]]; }
health() { [[ $(curl -s -o /dev/null -w '%{http_code}' "$1/_meridian/health") == 200 ]]; }
wait_meridian() {
    local u=URL_${1^^}
    for _ in $(seq 100); do health "${!u}" && return 0; sleep 0.1; done
    warn "meridian $1 did not answer /_meridian/health; its log:"
    tail -n 20 "$TMP/$1.log" >&2
    KEEP_TMP=1
    exit 1
}
# the hub first, so that the satellites find it at once
start_meridian east PEER
wait_meridian east
start_relay west "$R_WEST"
start_relay south "$R_SOUTH"
for r in west south; do
    for _ in $(seq 100); do relay_up "$r" && break; sleep 0.1; done
    relay_up "$r" || { cat "$TMP/relay-$r.err" >&2; die "relay $r did not start"; }
done
start_meridian west SAT
start_meridian south PEER
wait_meridian west
wait_meridian south

say "meridian replication benchmark  $(date -u '+%Y-%m-%d %H:%M:%SZ')"
say "binary   $MERIDIAN_BIN $BUILD_NOTE"
say "regions  east (hub) :$P_EAST, west (satellite) :$P_WEST, south (satellite) :$P_SOUTH; embedded store"
say "WAN      satellites -> hub through wanrelay, ${DELAY_MS} ms one way (RTT $(awk "BEGIN{print 2*$DELAY_MS}") ms)"
say "CPU      $NCPU CPUs, $PLACEMENT"
if [[ $PEER_DATA == same ]]; then
    say "disk     every region's data under $TMP/data (one disk: the others' fsyncs queue with west's)"
else
    say "disk     west's data under $TMP/data, east's and south's under $PEER_DIR (PEER_DATA)"
fi

drain() {  # drain TIMEOUT: sets DRAIN to "drained S STATE" or "not-drained S STATE"
    run_fg "$PY" "$CLIENT" drain --timeout "$1" \
        --region "east=$URL_EAST" --region "west=$URL_WEST" --region "south=$URL_SOUTH" >"$TMP/drain.out"
    DRAIN=$(cat "$TMP/drain.out")
}

# ---------------------------------------------------------------- (b)

RTT_MS=$(awk "BEGIN{print 2*$DELAY_MS}")
RELAY_CAL=""
if [[ " $PARTS " == *" b "* ]]; then
    say ""
    say "(b) satellite ack -> applied in every region, ${SAMPLES} writes of 1 KiB at west, spaced ~${SPACING_MS} ms"
    drain 60
    [[ $DRAIN == drained* ]] || say "    ! cluster not quiet before (b): $DRAIN"
    # the WAN emulator alone, same placement as the real relays
    run_fg "${ON_PEER[@]}" "$PY" "$CLIENT" relay-rtt --relay "$RELAY" --delay-ms "$DELAY_MS" \
        --samples 100 >"$TMP/relay-rtt.out" 2>&1
    cal=$(cat "$TMP/relay-rtt.out")
    if [[ $cal == relay-rtt* ]]; then
        set -- $cal
        RELAY_CAL="p50 $2 ms  p99 $3 ms"
        say "    WAN relay alone, 100 echo round trips: RTT p50 $2 ms  p99 $3 ms  max $4 ms  (nominal $RTT_MS ms)"
    else
        say "    ! relay calibration failed: $cal"
    fi
    run_fg "$PY" "$CLIENT" lag --write "west=$URL_WEST" --read "east=$URL_EAST" --read "south=$URL_SOUTH" \
        --samples "$SAMPLES" --poll-ms "$POLL_MS" --pollers "$POLLERS" --spacing-ms "$SPACING_MS" \
        --rtt-ms "$RTT_MS" --bytes "$DOC_BYTES" --tag "lag" --out "$TMP/lag.env" ||
        say "    ! the (b) client failed"
fi

# ---------------------------------------------------------------- (a)

cpu_list() {  # cpu_list "0-2,5" -> "0 1 2 5"
    local part out=()
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then out+=($(seq "${part%-*}" "${part#*-}")); else out+=("$part"); fi
    done
    echo "${out[@]}"
}
core_ticks() {  # core_ticks "CPU..." -> "busy total" jiffies summed over those CPUs
    local want=" $* "
    awk -v want="$want" '$1 ~ /^cpu[0-9]+$/ { n = substr($1, 4); if (index(want, " " n " ")) {
        t = 0; for (i = 2; i <= NF; i++) t += $i; busy += t - $5 - $6; total += t } }
        END { print busy + 0, total + 0 }' /proc/stat
}
if [[ ${#ON_SAT[@]} -gt 0 ]]; then
    SAT_LIST=$(cpu_list "$SAT_CPUS") LOAD_LIST=$(cpu_list "$LOAD_CPUS")
else
    SAT_LIST="" LOAD_LIST=""
fi

node_counters() {  # node_counters URL: "syncs sync_seconds transactions request_seconds_sum requests commit_seconds"
    curl -s "$1/_meridian/metrics" | awk '/^meridian_commit_syncs_total/ { n = $2 }
        /^meridian_commit_sync_seconds_total/ { s = $2 } /^meridian_commit_batches_total/ { b = $2 }
        /^meridian_request_duration_seconds_sum/ { rs = $2 } /^meridian_request_duration_seconds_count/ { rc = $2 }
        /^meridian_commit_seconds_total/ { cs = $2 }
        END { print n + 0, s + 0, b + 0, rs + 0, rc + 0, cs + 0 }'
}
# The block device under the scratch directory: its write counters show what
# reached the disk (the kernel's per-process write_bytes counts whole page-cache
# folios, not the blocks written).
DISK_STAT=/sys/class/block/$(basename "$(df --output=source "$TMP" | tail -1)")/stat
wbytes() {  # wbytes: bytes written to that device so far (every process's)
    awk '{ print $7 * 512 }' "$DISK_STAT" 2>/dev/null || echo 0
}
ticks() {  # ticks PID: utime+stime of a process, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
HZ=$(getconf CLK_TCK)
declare -A RPS P99 SATUS

run_wrk() {  # run_wrk TARGET ROUND_LABEL SECONDS -> sets LAST_RPS LAST_P99 LAST_SATUS, prints
    local target=$1 label=$2 secs=$3 prefix out
    [[ $target == plain ]] && prefix=/plain/ || prefix=/orders/
    out="$TMP/wrk-$target-$label.txt"
    local pids=("$PID_west" "$PID_east" "$PID_south" "$PID_RELAY_west" "$PID_RELAY_south")
    local before=() after=() i t0 t1
    for i in "${!pids[@]}"; do before[i]=$(ticks "${pids[i]}"); done
    local wb0 wb1 cm0 cm1
    wb0=$(wbytes)
    cm0=$(node_counters "$URL_WEST")
    local cs0 cl0 cs1 cl1 cores=""
    if [[ -n $SAT_LIST ]]; then cs0=$(core_ticks $SAT_LIST); cl0=$(core_ticks $LOAD_LIST); fi
    t0=$(date +%s.%N)
    export PUT_PREFIX=$prefix PUT_TAG="$target-$label" PUT_BYTES=$DOC_BYTES
    run_fg "${ON_LOAD[@]}" wrk -t "$THREADS" -c "$CONNECTIONS" -d "${secs}s" --latency \
        -s "$HERE/put.lua" "$URL_WEST" >"$out" 2>&1
    t1=$(date +%s.%N)
    for i in "${!pids[@]}"; do after[i]=$(ticks "${pids[i]}"); done
    wb1=$(wbytes)
    cm1=$(node_counters "$URL_WEST")
    if [[ -n $SAT_LIST ]]; then
        cs1=$(core_ticks $SAT_LIST); cl1=$(core_ticks $LOAD_LIST)
        cores=$(awk -v a="$cs0" -v b="$cs1" -v c="$cl0" -v d="$cl1" 'BEGIN {
            split(a, x); split(b, y); split(c, u); split(d, v)
            s = (y[2] > x[2]) ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0
            l = (v[2] > u[2]) ? 100 * (v[1] - u[1]) / (v[2] - u[2]) : 0
            printf "  core sat %3.0f%% load %3.0f%%", s, l }')
    fi
    local wall cpu=() reqs non2xx sockerr
    wall=$(awk "BEGIN{print $t1 - $t0}")
    for i in "${!pids[@]}"; do
        cpu[i]=$(awk "BEGIN{printf \"%.0f\", 100 * (${after[i]} - ${before[i]}) / $HZ / $wall}")
    done
    LAST_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    LAST_P99=$(awk '$1 == "99%" { v = $2; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
                  if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
                  printf "%.2f", v }' "$out")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    sockerr=$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')
    [[ -n $LAST_RPS && -n $LAST_P99 && -n $reqs ]] || {
        say "    ! wrk run $target $label produced no figures:"; sed 's/^/      /' "$out"; LAST_RPS=""; return 1; }
    # satellite CPU per request, in microseconds
    LAST_SATUS=$(awk "BEGIN{ if ($reqs > 0) printf \"%.0f\", 1e6 * (${after[0]} - ${before[0]}) / $HZ / $reqs; else print 0 }")
    local extra=""
    extra+=$(awk -v a="$wb0" -v b="$wb1" -v c="$cm0" -v d="$cm1" -v n="$reqs" 'BEGIN {
        split(c, x); split(d, y); f = y[1] - x[1]
        if (n > 0) printf "  disk %.1f KiB/req", (b - a) / 1024 / n
        if (y[5] > x[5]) printf "  in west %.2f ms", 1000 * (y[4] - x[4]) / (y[5] - x[5])
        if (n > 0 && f > 0) printf "  %.1f req/fsync %.2f ms/fsync %.1f txn/fsync", n / f, 1000 * (y[2] - x[2]) / f, (y[3] - x[3]) / f
        if (y[3] > x[3]) printf " %.2f ms/commit", 1000 * (y[6] - x[6]) / (y[3] - x[3]) }')
    [[ -n $non2xx ]] && extra+="  NON-2xx $non2xx"
    [[ -n $sockerr ]] && extra+="  $sockerr"
    printf '  %-7s %-7s %6s req/s  p99 %7s ms  west %4s us/req  cpu%% west %3s east %3s south %3s relays %3s%s%s\n' \
        "$label" "$target" "$LAST_RPS" "$LAST_P99" "$LAST_SATUS" "${cpu[0]}" "${cpu[1]}" "${cpu[2]}" \
        "$((cpu[3] + cpu[4]))" "$cores" "$extra"
    LAST_NON2XX=${non2xx:-0}
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; if (m > 0) printf "%.0f", 100 * (v[NR] - v[1]) / m; else print 0 }'; }

after_orders() {  # how far behind replication was at the end of the run, and how long it took to catch up
    local s0 d
    drain 0
    s0=${DRAIN#* }; s0=${s0#* }
    drain 300
    d=$DRAIN
    set -- $d
    if [[ $1 == drained ]]; then
        say "                  at the end of the run: ${s0//,/ }"
        say "                  replication caught up $2 s later"
    else
        say "    ! replication did not catch up within $2 s: ${d#not-drained * }"
    fi
}

TOTAL_NON2XX=0
if [[ " $PARTS " == *" a "* ]]; then
    say ""
    say "(a) PUT 1 KiB JSON at satellite west: /orders/ID (replicated) vs /plain/ID (replication off)"
    say "    wrk -t $THREADS -c $CONNECTIONS, ${DURATION} s per run, $ROUNDS rounds, order alternating"
    if (( WARMUP > 0 )); then
        run_wrk plain warmup "$WARMUP" >/dev/null
        run_wrk orders warmup "$WARMUP" >/dev/null
        drain 300
    fi
    for r in $(seq "$ROUNDS"); do
        if (( r % 2 )); then order="plain orders"; else order="orders plain"; fi
        for t in $order; do
            if run_wrk "$t" "round$r" "$DURATION"; then
                RPS[$t]+="$LAST_RPS "; P99[$t]+="$LAST_P99 "; SATUS[$t]+="$LAST_SATUS "
                TOTAL_NON2XX=$((TOTAL_NON2XX + LAST_NON2XX))
            fi
            [[ $t == orders ]] && after_orders
        done
    done
fi

# ---------------------------------------------------------------- summary

say ""
say "summary"
if [[ " $PARTS " == *" a "* && -n ${RPS[plain]:-} && -n ${RPS[orders]:-} ]]; then
    for t in plain orders; do
        # shellcheck disable=SC2086
        eval "M_RPS_$t=$(median ${RPS[$t]}) M_P99_$t=$(median ${P99[$t]}) M_US_$t=$(median ${SATUS[$t]}) SP_$t=$(spread ${RPS[$t]})"
    done
    printf '  (a) replication off  /plain/ID   %7.0f req/s  p99 %7.2f ms  west %4.0f us/req  (spread %s%%)\n' \
        "$M_RPS_plain" "$M_P99_plain" "$M_US_plain" "$SP_plain"
    printf '      replicated       /orders/ID  %7.0f req/s  p99 %7.2f ms  west %4.0f us/req  (spread %s%%)\n' \
        "$M_RPS_orders" "$M_P99_orders" "$M_US_orders" "$SP_orders"
    awk -v a="$M_RPS_orders" -v b="$M_RPS_plain" -v pa="$M_P99_orders" -v pb="$M_P99_plain" \
        -v ua="$M_US_orders" -v ub="$M_US_plain" 'BEGIN {
        r = a / b; printf "      ratio req/s %.2fx (target >= 0.80x: %s)   p99 %.2fx   per satellite core %.2fx\n",
            r, (r >= 0.8 ? "met" : "NOT met"), pa / pb, (ua > 0 ? ub / ua : 0) }'
    if (( TOTAL_NON2XX > 0 )); then
        say "      ! $TOTAL_NON2XX non-2xx answers in the measured runs (see the run lines)"
    fi
fi
if [[ " $PARTS " == *" b "* && -s $TMP/lag.env ]]; then
    # shellcheck disable=SC1091
    . "$TMP/lag.env"
    say "  (b) ack -> applied in every region at ${RTT_MS} ms RTT: p50 ${LAG_P50} ms  p99 ${LAG_P99} ms  (n=${LAG_N}, failed ${LAG_FAILED})"
    say "      ratio p99 / ${LAG_TARGET} ms = ${LAG_RATIO}x (target <= 1.00x: $(awk -v r="$LAG_RATIO" 'BEGIN{print (r <= 1 ? "met" : "NOT met")}'))   meridian_replication_seconds p99 ~${HIST_P99:-n/a} ms"
    [[ -z $RELAY_CAL ]] || say "      the WAN relay alone: RTT $RELAY_CAL (nominal ${RTT_MS} ms)"
fi

# what the nodes logged (level warn and above)
for r in east west south; do
    n=$(grep -c . "$TMP/$r.log" 2>/dev/null)
    if (( n > 0 )); then
        say "  log $r: $n lines, e.g.:"
        sort "$TMP/$r.log" | sed -E 's/^[^ ]+ //' | uniq -c | sort -rn | head -n 5 | sed 's/^/      /'
    fi
done
exit 0
