# bench/lib.sh: what the multi-process benchmarks (replication.sh, reads.sh)
# share, sourced after they set BENCH (their name, for messages and the
# scratch directory), ROOT, PY and KEEP_TMP:
#   say / warn / die           messages
#   bench_binary               MERIDIAN_BIN (or a Release build in build/),
#                              BUILD_NOTE naming the build type
#   bench_scratch              TMP, PIDS (long-lived processes), CHILD, and
#                              the traps that stop them all on any exit
#   run_fg CMD...              a measuring command that signals can interrupt
#   bench_pin NODE_VAR         ON_NODE / ON_LOAD taskset prefixes, NCPU, the
#                              CPU sets in $NODE_VAR (default: the last CPU)
#                              and LOAD_CPUS (the others), when PIN=1

say()  { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "$BENCH" "$*" >&2; }
die()  { warn "$*"; exit 1; }

bench_binary() {
    local cache bt
    BUILD_NOTE=""
    if [[ -n ${MERIDIAN_BIN:-} ]]; then
        [[ -x $MERIDIAN_BIN ]] || die "MERIDIAN_BIN=$MERIDIAN_BIN is not executable"
        cache="$(dirname "$MERIDIAN_BIN")/CMakeCache.txt"
    else
        MERIDIAN_BIN="$ROOT/build/meridian"
        if [[ ! -x $MERIDIAN_BIN ]]; then
            say "building meridian (Release) into $ROOT/build ..."
            { cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release &&
              cmake --build "$ROOT/build" -j2; } >&2 || die "build failed"
        fi
        cache="$ROOT/build/CMakeCache.txt"
    fi
    if [[ -f $cache ]]; then
        bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
        BUILD_NOTE="(build type: ${bt:-none})"
        grep -qi 'fsanitize' "$cache" && BUILD_NOTE+=" SANITIZER BUILD: figures mean little"
    fi
    return 0
}

stop_pids() {  # TERM, wait up to 5 s, then KILL
    local pid alive
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for pid in "$@"; do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    return 0
}

bench_cleanup() {
    trap - EXIT INT TERM
    [[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD" 2>/dev/null
    (( ${#PIDS[@]} )) && stop_pids "${PIDS[@]}"
    wait 2>/dev/null
    if [[ $KEEP_TMP == 1 ]]; then
        warn "kept scratch directory $TMP ${SCRATCH_MORE[*]}"
    else
        rm -rf "$TMP" "${SCRATCH_MORE[@]}"
    fi
}

bench_scratch() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/meridian-$BENCH.XXXXXX") || die "mktemp failed"
    PIDS=()      # long-lived processes: meridians and relays
    SCRATCH_MORE=()  # more scratch directories, elsewhere (removed with TMP)
    CHILD=""     # the measuring command running now
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Runs a measuring command in the background and waits for it, so that a
# signal interrupts the wait at once (bash delays traps until a foreground
# command ends) and the cleanup can stop it by its pid.
run_fg() {
    local rc
    "$@" &
    CHILD=$!
    wait "$CHILD"; rc=$?
    CHILD=""
    return "$rc"
}

# Prefixes, not functions: a backgrounded function would run in a subshell
# and $! would be that subshell's pid, not the process's.
bench_pin() {  # bench_pin NODE_CPUS_VAR
    local var=$1
    NCPU=$(nproc)
    if [[ $PIN == 1 && $NCPU -ge 2 ]] && command -v taskset >/dev/null; then
        printf -v "$var" '%s' "${!var:-$((NCPU - 1))}"
        LOAD_CPUS=${LOAD_CPUS:-0-$((NCPU - 2))}
        ON_NODE=(taskset -c "${!var}")
        ON_LOAD=(taskset -c "$LOAD_CPUS")
        return 0
    fi
    ON_NODE=()
    ON_LOAD=()
    return 1
}
