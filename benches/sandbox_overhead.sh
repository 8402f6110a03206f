#!/usr/bin/env bash
# Per-task overhead of the sandbox (issue 3 item 6). Reports numbers; never a pass/fail test.
#
# 1. Spawn level: N x `sh -c true` through the executor's spawn path (tokio current-thread
#    runtime), plain vs strict sandbox vs strict sandbox with network = true. This isolates
#    what the sandbox adds to one spawn.
# 2. Pipeline level: one `grit run` of a step fanned out to N tiny tasks, with and without
#    --no-sandbox (includes the engine, SQLite and capture, which are the same in both).
#
#    Run once with the FUSE capture (the default where /dev/fuse works) and once with
#    --capture dir, which tells the sandbox's own cost from the FUSE-backed OUTPUT_DIR's.
#
# Usage: flock /tmp/grit-bench.lock benches/sandbox_overhead.sh [N]   (default 1000). The machine
# is shared: the lock keeps engineers' benchmarks from overlapping, and the numbers move with the
# load average, which is printed before and after.
set -euo pipefail
N="${1:-1000}"
cd "$(dirname "$0")/.."

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), kernel: $(uname -r), user: $(id -un)"
cargo build --release --quiet
cargo test --release --quiet --bin grit --no-run 2>/dev/null
GRIT_BENCH_N="$N" cargo test --release --quiet --bin grit overhead_benchmark -- --ignored --nocapture 2>/dev/null \
    | grep -E '^(spawns|added)'

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
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
run() { # $1 = label, rest = extra args
    local label="$1"; shift
    rm -rf "$work/db"
    "$grit" run -q -m "$work/pipeline.toml" --db "$work/db" --step fan "$@" > /dev/null
    local start end
    start=$(date +%s%N)
    "$grit" run -q -m "$work/pipeline.toml" --db "$work/db" -j 1 "$@" > /dev/null
    end=$(date +%s%N)
    awk -v l="$label" -v ns=$((end - start)) -v n="$N" 'BEGIN { printf "%s: %d tasks in %.2f s, %.3f ms per task\n", l, n, ns / 1e9, ns / 1e6 / n }'
}
run "grit run --no-sandbox (-j 1)" --no-sandbox
run "grit run sandboxed   (-j 1)"
run "grit run --no-sandbox (-j 1, --capture dir)" --no-sandbox --capture dir
run "grit run sandboxed   (-j 1, --capture dir)" --capture dir
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
