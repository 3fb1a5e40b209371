#!/usr/bin/env bash
# bench/passthrough.sh: pass-through benchmark of Meridian against HAProxy and
# an nginx reverse proxy, all in front of the same backend nginx.
#
# What it does
#   - A backend nginx (1 worker) serves a 1 KiB JSON document, /doc.json.
#   - Three proxies sit in front of it, each on its own free port:
#       meridian  `meridian --config FILE --region bench`; /doc.json lies outside
#                 every container route, so it is the pass-through path
#       haproxy   nbthread 1, server-side keep-alive (http-reuse safe, default)
#       nginx     1 worker, upstream keepalive pool
#   - wrk (--latency) runs against each target in turn, ROUNDS times,
#     interleaved: round r starts at a different target (the order rotates), so
#     slow drift of a shared machine hits every target alike. The backend
#     itself is measured too, as a reference line.
#   - It prints every run as it finishes, then per target the median req/s and
#     the median p99 over the rounds, and Meridian's ratios to HAProxy and to
#     nginx. It is a benchmark, not a test: a target that cannot start is
#     reported as skipped and the script goes on; the exit status is 0 unless
#     the harness itself cannot run (no wrk, no nginx, no backend).
#
# CPU placement (2-core machine; PIN=0 turns it off)
#   All three proxies are single-threaded (Meridian's event loop, HAProxy's
#   nbthread 1, nginx's single worker), so each is given exactly one core to
#   itself: PROXY_CPUS (default: the last CPU). wrk and the backend nginx share
#   the other cores: LOAD_CPUS (default: every other CPU, i.e. CPU 0 on two
#   cores). The placement is identical for the three proxies, so the load side
#   costs the same whichever proxy is under test. The idle proxies stay up on
#   the proxy core during other targets' runs; idle, they cost nothing.
#   Each run reports the CPU the proxy process itself used (/proc/PID/stat,
#   in % of one core) and how busy each core was (/proc/stat, every process
#   counted). A proxy near 100% was the bottleneck, as intended; a load core
#   near 100% with the proxy well below it means the load side limited the
#   run and the req/s ratios understate the differences between proxies. A
#   proxy core much busier than the proxy process means other processes took
#   CPU from it. Hence the third figure, req/s per proxy CPU-second (req/s
#   divided by the proxy process's share of a core): the proxy's own cost per
#   request, which survives both cases. The backend reference line runs with
#   wrk and backend on the load core and the proxy core idle.
#   Why not the backend on the proxy core and wrk alone (BACKEND_CPUS=1)? Then
#   the proxy core surely limits, but two busy processes share it at the
#   scheduler's whim; in trials the spread between rounds was much wider.
#
# Equal work
#   Meridian adds X-Forwarded-For, X-Forwarded-Proto and Via; HAProxy is given
#   `option forwardfor` and nginx `proxy_set_header X-Forwarded-For`, so every
#   proxy rewrites headers. Keep-alive limits are raised everywhere (backend,
#   nginx's upstream pool, nginx's client side) so that no target pays for
#   reconnects the others do not.
#
# Environment
#   DURATION     seconds per run (default 8)
#   ROUNDS       runs per target (default 3)
#   WARMUP       seconds of discarded warm-up per target before round 1 (default 2; 0 skips)
#   CONNECTIONS  wrk connections (default 50)
#   THREADS      wrk threads (default 1: wrk shares one core with the backend,
#                more threads there only contend)
#   MERIDIAN_BIN meridian binary (default: <repo>/build/meridian, built with
#                `cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build`
#                if missing; MERIDIAN_BUILD=0 skips that build)
#   TARGETS      subset to run, space-separated (default "backend meridian haproxy nginx")
#   PIN          1 (default) pins with taskset, 0 does not
#   PROXY_CPUS, LOAD_CPUS, BACKEND_CPUS   taskset CPU lists (defaults above;
#                BACKEND_CPUS defaults to LOAD_CPUS)
#   HAPROXY, NGINX, WRK     binaries (defaults: haproxy, nginx, wrk from PATH or /usr/sbin)
#   QUIET_WAIT   before each run, wait up to this many seconds (default 30) for
#                other processes to leave the CPUs below QUIET_BUSY percent busy
#                (default 10); a run that starts on a busy machine says so
#   KEEP_TMP     1 keeps the scratch directory (configs, logs, raw wrk output)
#
# Usage: bench/passthrough.sh          (from any directory)
#        DURATION=10 ROUNDS=5 bench/passthrough.sh

set -u -o pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
TARGETS=${TARGETS:-"backend meridian haproxy nginx"}
PIN=${PIN:-1}
KEEP_TMP=${KEEP_TMP:-0}
MERIDIAN_BUILD=${MERIDIAN_BUILD:-1}
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_BUSY=${QUIET_BUSY:-10}
DOC_PATH=/doc.json
DOC_BYTES=1024

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"

say()  { printf '%s\n' "$*"; }
warn() { printf 'passthrough: %s\n' "$*" >&2; }
die()  { warn "$*"; exit 1; }

find_bin() {  # find_bin NAME [override]: path of an executable, or empty
    local name=$1 override=${2:-}
    if [[ -n $override ]]; then command -v "$override" 2>/dev/null; return; fi
    command -v "$name" 2>/dev/null || { [[ -x /usr/sbin/$name ]] && echo "/usr/sbin/$name"; }
}

WRK_BIN=$(find_bin wrk "${WRK:-}")         || true
NGINX_BIN=$(find_bin nginx "${NGINX:-}")   || true
HAPROXY_BIN=$(find_bin haproxy "${HAPROXY:-}") || true
[[ -n $WRK_BIN ]]   || die "wrk not found (apt-get install wrk)"
[[ -n $NGINX_BIN ]] || die "nginx not found (apt-get install nginx-light or nginx)"
command -v curl >/dev/null || die "curl not found"

for v in DURATION ROUNDS WARMUP CONNECTIONS THREADS QUIET_WAIT QUIET_BUSY; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
(( DURATION > 0 && ROUNDS > 0 && CONNECTIONS > 0 && THREADS > 0 )) ||
    die "DURATION, ROUNDS, CONNECTIONS and THREADS must be positive"
(( CONNECTIONS >= THREADS )) || die "CONNECTIONS must be at least THREADS"

# ---------------------------------------------------------------- processes

TMP=$(mktemp -d "${TMPDIR:-/tmp}/meridian-bench.XXXXXX") || die "mktemp failed"
PIDS=()
declare -A PID   # target name -> pid of the process start() launched

cleanup() {
    local pid kids=() k
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        # nginx workers and any other children are collected before the
        # parent goes, so that a parent killed hard cannot orphan them.
        mapfile -t k < <(pgrep -P "$pid" 2>/dev/null)
        kids+=("${k[@]}")
        kill -TERM "$pid" 2>/dev/null
    done
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        local alive=0
        for pid in "${PIDS[@]}" "${kids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        (( alive )) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}" "${kids[@]}"; do
        kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    if [[ $KEEP_TMP == 1 ]]; then
        warn "kept scratch directory $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ports are picked at random among those no socket uses now, and never twice.
USED_PORTS=" "
free_port() {
    local p taken
    taken=$(ss -Htan 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
    for _ in $(seq 200); do
        p=$(( ((RANDOM << 15) | RANDOM) % 40000 + 20000 ))
        [[ $USED_PORTS == *" $p "* ]] && continue
        grep -qx "$p" <<<"$taken" && continue
        USED_PORTS+="$p "
        echo "$p"
        return 0
    done
    return 1
}

# CPU placement.
NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
ALL_CPUS="0-$((NCPU - 1))"
if [[ $PIN == 1 ]] && command -v taskset >/dev/null && (( NCPU >= 2 )); then
    PROXY_CPUS=${PROXY_CPUS:-$((NCPU - 1))}
    if [[ -z ${LOAD_CPUS:-} ]]; then
        LOAD_CPUS=0
        (( NCPU > 2 )) && LOAD_CPUS="0-$((NCPU - 2))"
    fi
    BACKEND_CPUS=${BACKEND_CPUS:-$LOAD_CPUS}
    PIN_PROXY=(taskset -c "$PROXY_CPUS")
    PIN_LOAD=(taskset -c "$LOAD_CPUS")
    PIN_BACKEND=(taskset -c "$BACKEND_CPUS")
    if [[ $BACKEND_CPUS == "$LOAD_CPUS" ]]; then
        PLACEMENT="proxy on CPU $PROXY_CPUS; wrk + backend on CPU $LOAD_CPUS"
    else
        PLACEMENT="proxy on CPU $PROXY_CPUS; wrk on CPU $LOAD_CPUS; backend on CPU $BACKEND_CPUS"
    fi
else
    [[ $PIN == 1 ]] && warn "not pinning: needs taskset and at least 2 CPUs"
    PIN=0
    PROXY_CPUS="" LOAD_CPUS="" BACKEND_CPUS=""
    PIN_PROXY=()
    PIN_LOAD=()
    PIN_BACKEND=()
    PLACEMENT="not pinned (shared CPUs)"
fi

# start NAME LOG CMD...: start CMD in the background, remember its pid.
# CMD is a simple command (taskset execs the program), so $! is the program.
start() {
    local name=$1 log=$2; shift 2
    "$@" >"$log" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
}

# wait_http URL PID: 0 once URL answers 200, 1 if PID died or 10 s passed.
wait_http() {
    local url=$1 pid=$2 code
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}

# check_doc URL: 0 if URL serves the document intact, else prints why.
check_doc() {
    local url=$1 code
    code=$(curl -s -o "$TMP/check.body" -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)
    if [[ $code != 200 ]]; then
        echo "GET $url answered ${code:-nothing}, expected 200"
        return 1
    fi
    if ! cmp -s "$TMP/check.body" "$TMP/www${DOC_PATH}"; then
        echo "GET $url answered 200 with a body that differs from the document"
        return 1
    fi
}

# ---------------------------------------------------------------- configs

render() {  # render TEMPLATE OUT: substitute @VARS@ from the environment
    local tpl=$1 out=$2
    sed -e "s|@TMP@|$TMP|g" \
        -e "s|@PORT@|${R_PORT:-}|g" \
        -e "s|@PEER_PORT@|${R_PEER_PORT:-}|g" \
        -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@USER_LINE@|$NGINX_USER_LINE|g" \
        "$tpl" >"$out"
}

make_document() {
    # A JSON object of exactly DOC_BYTES bytes: fixed fields, then padding.
    local head='{"id":"doc-0001","tenantId":"bench","version":1,"kind":"passthrough-benchmark","items":[1,2,3,4,5,6,7,8],"note":"'
    local tail='"}'
    local pad=$(( DOC_BYTES - ${#head} - ${#tail} ))
    mkdir -p "$TMP/www"
    { printf '%s' "$head"; head -c "$pad" /dev/zero | tr '\0' 'x'; printf '%s' "$tail"; } \
        >"$TMP/www${DOC_PATH}"
}

# nginx started as root needs an unprivileged user that can read $TMP.
NGINX_USER_LINE=""
if (( EUID == 0 )); then
    NGINX_USER_LINE="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);"
    chmod 0755 "$TMP"
fi

# ---------------------------------------------------------------- targets

declare -A URL SKIP
ORDER=()

start_backend() {
    BACKEND_PORT=$(free_port) || die "no free port"
    make_document
    mkdir -p "$TMP/backend"
    render "$BENCH_DIR/conf/backend-nginx.conf" "$TMP/backend/nginx.conf"
    start backend "$TMP/backend/stdout.log" \
        "${PIN_BACKEND[@]}" "$NGINX_BIN" -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend/nginx.conf"
    URL[backend]="http://127.0.0.1:$BACKEND_PORT$DOC_PATH"
    wait_http "${URL[backend]}" "${PID[backend]}" ||
        die "backend nginx did not start: $(tail -n 5 "$TMP/backend/error.log" "$TMP/backend/stdout.log" 2>/dev/null)"
    local why
    why=$(check_doc "${URL[backend]}") || die "backend: $why"
}

start_haproxy() {
    if [[ -z $HAPROXY_BIN ]]; then SKIP[haproxy]="haproxy not found"; return; fi
    R_PORT=$(free_port) || die "no free port"
    mkdir -p "$TMP/haproxy"
    render "$BENCH_DIR/conf/haproxy.cfg" "$TMP/haproxy/haproxy.cfg"
    start haproxy "$TMP/haproxy/haproxy.log" \
        "${PIN_PROXY[@]}" "$HAPROXY_BIN" -db -f "$TMP/haproxy/haproxy.cfg"
    URL[haproxy]="http://127.0.0.1:$R_PORT$DOC_PATH"
    ready_or_skip haproxy "${URL[haproxy]}" "${PID[haproxy]}" "$TMP/haproxy/haproxy.log"
}

start_nginx_proxy() {
    R_PORT=$(free_port) || die "no free port"
    mkdir -p "$TMP/nginx"
    render "$BENCH_DIR/conf/proxy-nginx.conf" "$TMP/nginx/nginx.conf"
    start nginx "$TMP/nginx/stdout.log" \
        "${PIN_PROXY[@]}" "$NGINX_BIN" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
    URL[nginx]="http://127.0.0.1:$R_PORT$DOC_PATH"
    ready_or_skip nginx "${URL[nginx]}" "${PID[nginx]}" "$TMP/nginx/error.log"
}

# find_meridian: sets MERIDIAN to a runnable binary, or SKIP[meridian].
find_meridian() {
    if [[ -n ${MERIDIAN_BIN:-} ]]; then
        [[ -x $MERIDIAN_BIN ]] && { MERIDIAN=$MERIDIAN_BIN; return; }
        SKIP[meridian]="MERIDIAN_BIN=$MERIDIAN_BIN is not an executable"
        return
    fi
    MERIDIAN="$ROOT/build/meridian"
    [[ -x $MERIDIAN ]] && return
    if [[ $MERIDIAN_BUILD != 1 ]]; then
        SKIP[meridian]="$MERIDIAN is missing (MERIDIAN_BUILD=0: not building)"
        return
    fi
    say "building Meridian (Release) in $ROOT/build ..."
    if ! (cd "$ROOT" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release &&
          cmake --build build) >"$TMP/build.log" 2>&1; then
        SKIP[meridian]="build failed (last lines: $(tail -n 3 "$TMP/build.log" | tr '\n' ' '))"
        return
    fi
    [[ -x $MERIDIAN ]] || SKIP[meridian]="the build succeeded but produced no $MERIDIAN"
}

meridian_build_type() {
    local cache
    cache="$(dirname "$MERIDIAN")/CMakeCache.txt"
    [[ -r $cache ]] || { echo "unknown"; return; }
    local type san
    type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
    san=$(sed -n 's/^MERIDIAN_SANITIZE:[A-Z]*=//p' "$cache")
    printf '%s%s' "${type:-default}" "$([[ $san == ON ]] && echo ', SANITIZERS ON: figures are meaningless')"
}

start_meridian() {
    find_meridian
    [[ -n ${SKIP[meridian]:-} ]] && return
    R_PORT=$(free_port) && R_PEER_PORT=$(free_port) || die "no free port"
    mkdir -p "$TMP/meridian/data"
    render "$BENCH_DIR/conf/meridian.yaml" "$TMP/meridian/meridian.yaml"
    start meridian "$TMP/meridian/meridian.log" \
        "${PIN_PROXY[@]}" "$MERIDIAN" --config "$TMP/meridian/meridian.yaml" --region bench
    URL[meridian]="http://127.0.0.1:$R_PORT$DOC_PATH"
    if ! wait_http "http://127.0.0.1:$R_PORT/_meridian/health" "${PID[meridian]}"; then
        SKIP[meridian]=$(not_up "${PID[meridian]}" "GET /_meridian/health" "$TMP/meridian/meridian.log")
        return
    fi
    local why
    why=$(check_doc "${URL[meridian]}") && return
    SKIP[meridian]="$why"
}

# not_up PID WHAT LOG: why a process that wait_http gave up on is not serving.
not_up() {
    local pid=$1 what=$2 log=$3 status
    if kill -0 "$pid" 2>/dev/null; then
        printf 'running, but %s did not answer 200 within 10 s' "$what"
    else
        wait "$pid"; status=$?
        printf 'exited with status %d before %s answered 200' "$status" "$what"
    fi
    [[ -s $log ]] && printf '; last log lines: %s' "$(tail -n 3 "$log" | tr '\n' ' ')"
}

# ready_or_skip NAME URL PID LOG
ready_or_skip() {
    local name=$1 url=$2 pid=$3 log=$4 why
    if ! wait_http "$url" "$pid"; then
        SKIP[$name]=$(not_up "$pid" "GET $url" "$log")
        return
    fi
    why=$(check_doc "$url") || SKIP[$name]="$why"
}

# ---------------------------------------------------------------- measuring

# cpu_ticks CPULIST: "busy total" jiffies summed over the CPUs in the list.
cpu_ticks() {
    local list=$1
    [[ -z $list ]] && { echo "0 0"; return; }
    awk -v list="$list" '
        BEGIN {
            n = split(list, parts, ",")
            for (i = 1; i <= n; i++) {
                if (split(parts[i], r, "-") == 2) for (c = r[1]; c <= r[2]; c++) want["cpu" c] = 1
                else want["cpu" parts[i]] = 1
            }
        }
        $1 in want {
            t = 0; for (i = 2; i <= NF; i++) t += $i
            busy += t - $5 - $6; total += t
        }
        END { printf "%d %d\n", busy, total }' /proc/stat
}

pct() {  # pct BEFORE AFTER: busy percent between two cpu_ticks samples
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        t = y[2] - x[2]; if (t <= 0) { print "-"; exit }
        printf "%.0f", 100 * (y[1] - x[1]) / t }'
}

# parse_wrk FILE: "rps p99_ms requests errors" (errors: socket errors + non-2xx)
parse_wrk() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return v * 0.001
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/)  return v * 60000
            if (v ~ /s$/)  return v * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        /^ +99%/          { p99 = ms($2) }
        /requests in/     { reqs = $1 }
        /Socket errors:/  { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx/  { err += $NF }
        END { if (rps == "") exit 1; printf "%s %.3f %s %d\n", rps, p99, reqs, err }' "$1"
}

# run_wrk TARGET SECONDS OUT
run_wrk() {
    "${PIN_LOAD[@]}" "$WRK_BIN" -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" --latency \
        "${URL[$1]}" >"$3" 2>&1
}

declare -A RPS P99 EFF
FOREIGN="" RUNS=0 BUSY_RUNS=0
# wait_quiet: between runs every process of ours is idle, so whatever keeps
# the CPUs busy belongs to someone else. Wait (up to QUIET_WAIT seconds) for
# it to drop below QUIET_BUSY percent; print the last background figure.
wait_quiet() {
    local waited=0 a busy
    while :; do
        a=$(cpu_ticks "$ALL_CPUS"); sleep 1
        busy=$(pct "$a" "$(cpu_ticks "$ALL_CPUS")")
        if [[ ! $busy =~ ^[0-9]+$ ]] || (( busy < QUIET_BUSY || waited >= QUIET_WAIT )); then
            echo "$busy"
            return
        fi
        waited=$((waited + 1))
    done
}

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# proc_ticks PID: CPU time (user + system, in clock ticks) used so far by PID,
# all its threads, and its direct children (nginx's worker).
proc_ticks() {
    local pid=$1 p sum=0 f
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null); do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }            # the fields after "pid (comm) "
        read -r -a f <<<"$f"   # f[11], f[12]: utime, stime
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}

# proxy_share TICKS0 TICKS1 T0 T1: percent of one CPU the proxy used.
proxy_share() {
    awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" -v hz="$CLK_TCK" 'BEGIN {
        w = t1 - t0; if (w <= 0) { print "-"; exit }
        printf "%.0f", 100 * (b - a) / hz / w }'
}

measure() {  # measure TARGET ROUND
    local t=$1 r=$2 out="$TMP/wrk.$1.$2.txt" before_p before_l res rps p99 reqs err cp cl note="" bg
    local pid="" pt0=0 pt1=0 t0 t1 share=-
    bg=$(wait_quiet)
    RUNS=$((RUNS + 1))
    if [[ $bg =~ ^[0-9]+$ ]] && (( bg >= QUIET_BUSY )); then
        note+="  (machine ${bg}% busy before the run)"
        BUSY_RUNS=$((BUSY_RUNS + 1))
    fi
    [[ $t != backend ]] && pid=${PID[$t]}
    before_p=$(cpu_ticks "$PROXY_CPUS"); before_l=$(cpu_ticks "$LOAD_CPUS")
    [[ -n $pid ]] && pt0=$(proc_ticks "$pid")
    t0=$EPOCHREALTIME
    run_wrk "$t" "$DURATION" "$out"
    t1=$EPOCHREALTIME
    [[ -n $pid ]] && pt1=$(proc_ticks "$pid") && share=$(proxy_share "$pt0" "$pt1" "$t0" "$t1")
    cp=$(pct "$before_p" "$(cpu_ticks "$PROXY_CPUS")")
    cl=$(pct "$before_l" "$(cpu_ticks "$LOAD_CPUS")")
    if ! res=$(parse_wrk "$out"); then
        printf '  round %d  %-9s  wrk failed: %s\n' "$r" "$t" "$(tail -n 2 "$out" | tr '\n' ' ')"
        return
    fi
    read -r rps p99 reqs err <<<"$res"
    (( err > 0 )) && note+="  ($err errors/non-2xx of $reqs)"
    RPS[$t]+="$rps "; P99[$t]+="$p99 "
    # With no proxy in the path, whatever keeps the proxy core busy is
    # someone else's work: a measure of the machine's noise.
    [[ $t == backend && $cp =~ ^[0-9]+$ ]] && FOREIGN+="$cp "
    # Requests served per second of the proxy's own CPU time: its cost per
    # request, which holds when the load side limited the run and, mostly,
    # when other processes stole CPU time from it.
    if [[ $share =~ ^[0-9]+$ ]] && (( share > 0 )); then
        EFF[$t]+="$(awk -v r="$rps" -v c="$share" 'BEGIN { printf "%.0f", r * 100 / c }') "
    fi
    if (( PIN )); then
        printf '  round %d  %-9s %8.0f req/s  p99 %7.3f ms  proxy process %3s%%, proxy core %3s%%, load core %3s%%%s\n' \
            "$r" "$t" "$rps" "$p99" "$share" "$cp" "$cl" "$note"
    else
        printf '  round %d  %-9s %8.0f req/s  p99 %7.3f ms  proxy process %3s%%%s\n' \
            "$r" "$t" "$rps" "$p99" "$share" "$note"
    fi
}

median() {  # median V...: the median of the numbers given, or empty
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

spread() {  # spread MEDIAN V...: "(max - min) / median" as a percentage
    local m=$1; shift
    printf '%s\n' "$@" | sort -g | awk -v m="$m" '{ v[NR] = $1 }
        END { if (NR < 2 || m <= 0) { print "-"; exit } printf "%.0f%%\n", 100 * (v[NR] - v[1]) / m }'
}

# ---------------------------------------------------------------- run

want() { [[ " $TARGETS " == *" $1 "* ]]; }

start_backend
want meridian && start_meridian
want haproxy  && start_haproxy
want nginx    && start_nginx_proxy
for t in backend meridian haproxy nginx; do
    want "$t" || continue
    [[ -n ${SKIP[$t]:-} ]] && continue
    ORDER+=("$t")
done

say "Meridian pass-through benchmark: GET $DOC_PATH (${DOC_BYTES}-byte JSON) via each target to one backend nginx"
say "  wrk $($WRK_BIN --version 2>&1 | awk 'NR == 1 { print $2 }'): $THREADS thread(s), $CONNECTIONS connections, ${DURATION}s per run, $ROUNDS rounds, ${WARMUP}s warm-up"
say "  $NCPU CPUs, $PLACEMENT; load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
say "  before each run, waits up to ${QUIET_WAIT}s for the machine to be < ${QUIET_BUSY}% busy"
want meridian && [[ -z ${SKIP[meridian]:-} ]] &&
    say "  meridian: $MERIDIAN ($(meridian_build_type))"
want haproxy && [[ -n $HAPROXY_BIN ]] &&
    say "  haproxy: $($HAPROXY_BIN -v 2>/dev/null | awk 'NR == 1 { print $3 }'), nbthread 1"
want nginx && say "  nginx: $($NGINX_BIN -v 2>&1 | sed 's|.*nginx/||'), 1 worker, upstream keepalive"
for t in backend meridian haproxy nginx; do
    want "$t" && [[ -n ${SKIP[$t]:-} ]] && say "  SKIPPED $t: ${SKIP[$t]}"
done
say ""

if (( WARMUP > 0 )); then
    for t in "${ORDER[@]}"; do run_wrk "$t" "$WARMUP" "$TMP/warmup.$t.txt"; done
fi

n=${#ORDER[@]}
for (( r = 1; r <= ROUNDS; r++ )); do
    for (( i = 0; i < n; i++ )); do
        measure "${ORDER[$(( (i + r - 1) % n ))]}" "$r"
    done
done

say ""
printf '%-10s %13s %8s %14s %22s %5s\n' target "median req/s" spread "median p99 ms" "req/s per proxy CPU-s" runs
declare -A MRPS MP99 MEFF
for t in backend meridian haproxy nginx; do
    want "$t" || continue
    if [[ -n ${SKIP[$t]:-} ]]; then
        printf '%-10s %13s %8s %14s %22s %5s\n' "$t" skipped - - - -
        continue
    fi
    read -r -a rs <<<"${RPS[$t]:-}"; read -r -a ps <<<"${P99[$t]:-}"; read -r -a es <<<"${EFF[$t]:-}"
    if (( ${#rs[@]} == 0 )); then
        printf '%-10s %13s %8s %14s %22s %5s\n' "$t" "no data" - - - 0
        continue
    fi
    MRPS[$t]=$(median "${rs[@]}"); MP99[$t]=$(median "${ps[@]}")
    eff=-
    if (( ${#es[@]} > 0 )); then MEFF[$t]=$(median "${es[@]}"); eff=$(printf '%.0f' "${MEFF[$t]}"); fi
    label=$t; [[ $t == backend ]] && label="backend*"
    spread=$(spread "${MRPS[$t]}" "${rs[@]}")
    printf '%-10s %13.0f %8s %14.3f %22s %5d\n' "$label" "${MRPS[$t]}" "$spread" "${MP99[$t]}" "$eff" "${#rs[@]}"
done
want backend && say "* backend: wrk straight to the backend nginx, no proxy (reference)"
say "spread: (max - min) / median of req/s over the rounds; a wide spread means a noisy machine"
if [[ -n $FOREIGN ]]; then
    read -r -a fs <<<"$FOREIGN"
    foreign=$(median "${fs[@]}")
    if awk -v f="$foreign" 'BEGIN { exit !(f >= 10) }'; then
        say "NOISY: the proxy core was ${foreign}% busy with other processes' work during the backend runs"
        say "       (median); the proxy figures above are disturbed by it; rerun on a quieter machine."
    fi
fi
(( BUSY_RUNS > 0 )) &&
    say "NOISY: $BUSY_RUNS of $RUNS runs started while other processes kept the machine >= ${QUIET_BUSY}% busy"

say ""
for other in haproxy nginx; do
    want meridian && want "$other" || continue
    if [[ -z ${MRPS[meridian]:-} || -z ${MRPS[$other]:-} ]]; then
        say "meridian / $other: n/a (needs both targets measured)"
        continue
    fi
    awk -v mr="${MRPS[meridian]}" -v mp="${MP99[meridian]}" -v me="${MEFF[meridian]:-}" \
        -v or="${MRPS[$other]}" -v op="${MP99[$other]}" -v oe="${MEFF[$other]:-}" -v name="$other" 'BEGIN {
        rr = mr / or; pr = (op > 0) ? mp / op : 0
        printf "meridian / %-8s req/s %.2fx   p99 %.2fx", name, rr, pr
        if (me != "" && oe != "" && oe > 0) printf "   req/s per proxy CPU-s %.2fx", me / oe
        if (name == "haproxy")
            printf "   (target: req/s >= 1.00x and p99 <= 1.00x: %s)", (rr >= 1 && pr <= 1) ? "met" : "not met"
        printf "\n" }'
done
say "req/s ratio above 1 means Meridian serves more; p99 ratio below 1 means Meridian's tail is shorter."
exit 0
