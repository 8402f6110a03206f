#!/usr/bin/env bash
# Engine benchmarks (core issue): fan-out throughput against an xargs floor measured in the same
# run, no-op rerun time at 10,000 and 100,000 resources, and peak RSS.
#
#   benches/engine.sh            # 1,000 and 10,000 tasks; no-op reruns at 10k and 100k resources
#   SIZES="1000" BIG=0 benches/engine.sh   # quicker
#   GRIT=/tmp/grit-main SIZES=10000 BIG=0 benches/engine.sh   # another binary
#
# Prints a table; numbers go to BENCHMARKS.md by hand with the machine and date.
set -euo pipefail
cd "$(dirname "$0")/.."
# GRIT=<binary> measures that binary instead of building this tree (e.g. main's, for before/after).
if [ -z "${GRIT:-}" ]; then
  cargo build --release -q
  GRIT=$PWD/target/release/grit
fi
JOBS=${JOBS:-$(nproc)}
SIZES=${SIZES:-"1000 10000"}
BIG=${BIG:-1}
work=$(mktemp -d /var/tmp/grit-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
peak_rss_mib() { # command... ; prints "<seconds> <peak RSS MiB>"
  /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr"; return 1; }
  awk '{ printf "%s %.1f\n", $1, $2 / 1024 }' "$work/time.out"
}

manifest() { # N -> a fan-out manifest: one source writes N items, one tiny task per item
  cat <<TOML
[[step]]
name = "items"
once = true
script = 'i=1; while [ \$i -le $1 ]; do echo \$i > \$OUTPUT_DIR/item_\$i; i=\$((i+1)); done'

[[step]]
name = "copy"
inputs = ["item_*"]
script = 'cp "\$INPUT_FILE" "\$OUTPUT_DIR/out_\$GRIT_INPUT_NAME"'
TOML
}

printf '%-44s %12s %12s %10s\n' "workload" "wall (s)" "tasks/s" "vs floor"
for n in $SIZES; do
  # Floor: the same per-item work (sh -c + cp into a fresh directory) through xargs -P.
  mkdir -p "$work/floor-$n/in" "$work/floor-$n/out"
  (cd "$work/floor-$n/in" && i=1 && while [ $i -le "$n" ]; do echo $i > item_$i; i=$((i+1)); done)
  t0=$(now)
  seq 1 "$n" | xargs -P "$JOBS" -I{} sh -ec 'mkdir "$0/out/t{}" && cp "$0/in/item_{}" "$0/out/t{}/out_item_{}"' "$work/floor-$n"
  t1=$(now)
  floor=$(elapsed "$t0" "$t1")
  printf '%-44s %12s %12.0f %10s\n' "xargs -P$JOBS sh -c cp, $n tasks (floor)" "$floor" "$(python3 -c "print($n/$floor)")" "1.00x"

  mkdir -p "$work/grit-$n"
  manifest "$n" > "$work/grit-$n/pipeline.toml"
  t0=$(now)
  "$GRIT" run -q --no-sandbox --capture dir -j "$JOBS" -m "$work/grit-$n/pipeline.toml" --db "$work/grit-$n/db"
  t1=$(now)
  wall=$(elapsed "$t0" "$t1")
  tasks=$((n + 1))
  printf '%-44s %12s %12.0f %9.2fx\n' "grit plain executor, $tasks tasks" "$wall" "$(python3 -c "print($tasks/$wall)")" "$(python3 -c "print($wall/$floor)")"

  read -r secs rss < <(peak_rss_mib "$GRIT" run -q --no-sandbox --capture dir -j "$JOBS" -m "$work/grit-$n/pipeline.toml" --db "$work/grit-$n/db")
  printf '%-44s %12s %12s %10s   peak RSS %s MiB\n' "grit no-op rerun, $((2 * n)) resources" "$secs" "-" "-" "$rss"
done

if [ "$BIG" = 1 ]; then
  # 100,000 resources: 50,000 items and 50,000 derived outputs (50,001 tasks).
  n=50000
  mkdir -p "$work/big"
  manifest "$n" > "$work/big/pipeline.toml"
  read -r secs rss < <(peak_rss_mib "$GRIT" run -q --no-sandbox --capture dir -j "$JOBS" -m "$work/big/pipeline.toml" --db "$work/big/db")
  printf '%-44s %12s %12.0f %10s   peak RSS %s MiB\n' "grit plain executor, $((n + 1)) tasks" "$secs" "$(python3 -c "print($((n + 1))/$secs)")" "-" "$rss"
  for attempt in 1 2 3; do
    read -r secs rss < <(peak_rss_mib "$GRIT" run -q --no-sandbox --capture dir -j "$JOBS" -m "$work/big/pipeline.toml" --db "$work/big/db")
    printf '%-44s %12s %12s %10s   peak RSS %s MiB\n' "grit no-op rerun, $((2 * n)) resources (#$attempt)" "$secs" "-" "-" "$rss"
  done
  read -r secs rss < <(peak_rss_mib "$GRIT" status --db "$work/big/db")
  printf '%-44s %12s %12s %10s   peak RSS %s MiB\n' "grit status, $((2 * n)) resources" "$secs" "-" "-" "$rss"
  read -r secs rss < <(peak_rss_mib "$GRIT" resources --json --db "$work/big/db")
  printf '%-44s %12s %12s %10s   peak RSS %s MiB\n' "grit resources --json, $((2 * n)) resources" "$secs" "-" "-" "$rss"
fi
