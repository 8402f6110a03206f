#!/usr/bin/env bash
# Per-task overhead of the sandbox (issue 3 item 6). Reports numbers; never a pass/fail test.
#
# 1. Spawn level: N x `sh -c true` through the executor's spawn path (tokio current-thread
#    runtime), plain vs strict sandbox vs strict sandbox with network = true, interleaved in
#    blocks of 50. This isolates what the sandbox adds to one spawn.
#    benches/ns_floor.c prints the kernel's own price for those namespaces (clone3 + exit, no
#    mounts, no exec) as the floor.
# 2. Pipeline level: one `grit run` of a step fanned out to N tiny tasks, with and without
#    --no-sandbox (includes the engine, SQLite and capture, which are the same in both).
#
#    Run with the FUSE capture (the default where /dev/fuse works) and with --capture dir,
#    which tells the sandbox's own cost from the FUSE-backed OUTPUT_DIR's.
#
# Usage: flock /tmp/grit-bench.lock benches/sandbox_overhead.sh [N]   (default 1000; ROUNDS=3
# pipeline runs of each kind). The machine is shared: the lock keeps engineers' benchmarks from
# overlapping, and the numbers move with the load average, which is printed before and after.
set -euo pipefail
N="${1:-1000}"
cd "$(dirname "$0")/.."

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), kernel: $(uname -r), user: $(id -un)"
# The kernel's floor: the same namespaces created and torn down with nothing else (ns_floor.c).
floor_bin="$(mktemp)"
cc -O2 -o "$floor_bin" benches/ns_floor.c && "$floor_bin" "$N"
rm -f "$floor_bin"
cargo build --release --quiet
cargo test --release --quiet --lib --no-run 2>/dev/null
GRIT_BENCH_N="$N" cargo test --release --quiet --lib overhead_benchmark -- --ignored --nocapture 2>/dev/null \
    | grep -E "^(spawns|added|in_spawn)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
source benches/discard.sh # nothing is deleted between timed runs
cat > "$work/pipeline.toml" <<TOML
[[step]]
name = "fan"
script = 'for i in \$(seq $N); do echo \$i > "\$OUTPUT_DIR/item_\$i"; done'

[[step]]
name = "tiny"
inputs = ["item_*"]
script = 'true'
TOML
grit=target/release/grit
ROUNDS="${ROUNDS:-3}"
once() { # extra args -> ms per task of one run of the tiny step
    discard "$work/db"
    "$grit" run -q -m "$work/pipeline.toml" --db "$work/db" --step fan "$@" > /dev/null
    local start end
    start=$(date +%s%N)
    "$grit" run -q -m "$work/pipeline.toml" --db "$work/db" -j 1 "$@" > /dev/null
    end=$(date +%s%N)
    awk -v ns=$((end - start)) -v n="$N" 'BEGIN { printf "%.3f\n", ns / 1e6 / n }'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Plain and sandboxed runs alternate, ROUNDS times, so that load changes hit both alike; the
# medians are reported.
for capture in fuse dir; do
    plain=(); boxed=()
    for _ in $(seq "$ROUNDS"); do
        plain+=("$(once --no-sandbox --capture "$capture")")
        boxed+=("$(once --capture "$capture")")
    done
    p=$(printf '%s\n' "${plain[@]}" | median)
    b=$(printf '%s\n' "${boxed[@]}" | median)
    awk -v c="$capture" -v p="$p" -v b="$b" -v n="$N" -v r="$ROUNDS" 'BEGIN {
        printf "grit run, %d tiny tasks, -j 1, --capture %s (median of %d): --no-sandbox %.3f ms/task, sandboxed %.3f ms/task, added %+.3f ms\n", n, c, r, p, b, b - p }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
