#!/usr/bin/env bash
# The Slurm executor (issue 17) on the one-node cluster of tests/slurm-cluster.sh: N tiny tasks
# (one per input, `echo $((x * 2))` into OUTPUT_DIR) through `grit run --executor slurm`, against
#   - the floor: ONE `sbatch --array --wait` job with the elements grit used, each running as many
#     items as grit's element of the same index did, with the same per-item script (`bash -ec`,
#     same INPUT_FILE/OUTPUT_DIR contract), into a directory, with no grit and no sandbox;
#   - grit's local mode (`grit run`, the process executor) on a copy of the same store.
# Every mode starts from the same store, where the inputs are already live (a `once` source ran).
#
#   benches/slurm.sh              # N=10000, 3 runs of each, medians
#   N=1000 RUNS=1 benches/slurm.sh
#   GRIT=/path/to/other/grit benches/slurm.sh   # another build (no cargo build)
#   GRIT_BEFORE=/path/to/old/grit benches/slurm.sh   # also time that build's Slurm mode each run
#   PLAIN=1 benches/slurm.sh      # also time Slurm mode without the sandbox (`--no-sandbox
#                                 # --capture dir`): what the backend costs apart from the sandbox
#
# The floor's time ends when its last element ends (each element notes the time), not when
# `sbatch --wait` notices: sbatch polls the controller at growing intervals, which made every
# floor measure 42.0 s whatever the load.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GRIT:-}" ]; then
  cargo build --release -q
  GRIT=$PWD/target/release/grit
fi
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
N=${N:-10000}
RUNS=${RUNS:-3}
eval "$(tests/slurm-cluster.sh start)"
export SLURM_CONF
work=$(mktemp -d /var/tmp/grit-slurm-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Nothing is deleted between timed runs: see benches/discard.sh.
source benches/discard.sh

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

SCRIPT='echo $(( $(cat "$INPUT_FILE") * 2 )) > "$OUTPUT_DIR/d_${GRIT_INPUT_NAME#n_}"'
cat >"$work/pipeline.toml" <<TOML
[[step]]
name = "items"
once = true
script = 'for i in \$(seq 1 $N); do echo \$i > \$OUTPUT_DIR/n_\$i; done'

[[step]]
name = "double"
inputs = ["n_*"]
script = '$SCRIPT'
TOML
"$GRIT" run -m "$work/pipeline.toml" --db "$work/base" --step items -q >/dev/null
# The other build gets a store of its own making (an older build refuses a newer schema).
if [ -n "${GRIT_BEFORE:-}" ]; then
  "$GRIT_BEFORE" run -m "$work/pipeline.toml" --db "$work/base-before" --step items -q >/dev/null
fi
# The inputs, as files, for the floor.
mkdir -p "$work/in"
(cd "$work/in" && for i in $(seq 1 "$N"); do echo "$i" >"n_$i"; done)

PLAIN=${PLAIN:-0}
grit_times=() floor_times=() local_times=() before_times=() plain_times=() elements_used=()
for run in $(seq 1 "$RUNS"); do
  # grit through Slurm.
  discard "$work/db" && cp -a "$work/base" "$work/db"
  t0=$(now)
  "$GRIT" run -m "$work/pipeline.toml" --db "$work/db" --executor slurm >"$work/grit.out" 2>"$work/grit.err"
  t1=$(now)
  grit_times+=("$(elapsed "$t0" "$t1")")
  # grit's groups: per submission, E elements of T/E tasks (the last ones one task fewer).
  sizes=$(grep -o 'submitted Slurm job [0-9]* ([0-9]* array elements*, [0-9]* tasks*' "$work/grit.err" |
    awk '{e = substr($5, 2); t = $8; for (i = 0; i < e; i++) printf "%d ", int(t / e) + (i < t % e)}')
  elements=$(echo $sizes | wc -w)
  elements_used+=("$elements")

  # The floor: one array job, the same number of elements, the same per-item work.
  discard "$work/floor" && mkdir -p "$work/floor/out"
  cat >"$work/floor/job.sh" <<EOF
#!/bin/bash
set -e
sizes=($sizes); g=\$SLURM_ARRAY_TASK_ID; first=1
for ((k = 0; k < g; k++)); do first=\$((first + sizes[k])); done
for ((i = first; i < first + sizes[g]; i++)); do
  INPUT_FILE=$work/in/n_\$i GRIT_INPUT_NAME=n_\$i OUTPUT_DIR=$work/floor/out bash -ec '$SCRIPT'
done
date +%s.%N >> $work/floor/ends
EOF
  t0=$(now)
  sbatch --wait --quiet --array=0-$((elements - 1)) --output=/dev/null "$work/floor/job.sh"
  t1=$(sort -g "$work/floor/ends" | tail -1)
  floor_times+=("$(elapsed "$t0" "$t1")")
  [ "$(ls "$work/floor/out" | wc -l)" = "$N" ] || { echo "floor wrote $(ls "$work/floor/out" | wc -l) files" >&2; exit 1; }

  # grit's local mode.
  discard "$work/db" && cp -a "$work/base" "$work/db"
  t0=$(now)
  "$GRIT" run -m "$work/pipeline.toml" --db "$work/db" -q >/dev/null
  t1=$(now)
  local_times+=("$(elapsed "$t0" "$t1")")
  before=""
  if [ -n "${GRIT_BEFORE:-}" ]; then
    discard "$work/db" && cp -a "$work/base-before" "$work/db"
    t0=$(now)
    "$GRIT_BEFORE" run -m "$work/pipeline.toml" --db "$work/db" --executor slurm >/dev/null 2>&1
    t1=$(now)
    before_times+=("$(elapsed "$t0" "$t1")")
    before=", before ${before_times[-1]} s"
  fi
  plain=""
  if [ "$PLAIN" = 1 ]; then
    discard "$work/db" && cp -a "$work/base" "$work/db"
    t0=$(now)
    "$GRIT" run -m "$work/pipeline.toml" --db "$work/db" --executor slurm --no-sandbox --capture dir >/dev/null 2>&1
    t1=$(now)
    plain_times+=("$(elapsed "$t0" "$t1")")
    plain=", slurm without the sandbox ${plain_times[-1]} s"
  fi
  echo "run $run: slurm ${grit_times[-1]} s ($elements elements), floor ${floor_times[-1]} s, local ${local_times[-1]} s$before$plain (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done

g=$(echo "${grit_times[*]}" | median)
f=$(echo "${floor_times[*]}" | median)
l=$(echo "${local_times[*]}" | median)
printf '%-44s %10s\n' "mode ($N tiny tasks, median of $RUNS)" "seconds"
printf '%-44s %10s\n' "floor: one sbatch --array, same groups" "$f"
printf '%-44s %10s\n' "grit --executor slurm" "$g"
printf '%-44s %10s\n' "grit local (process executor)" "$l"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${GRIT_BEFORE:-}" ]; then
  b=$(echo "${before_times[*]}" | median)
  printf '%-44s %10s\n' "before: $GRIT_BEFORE --executor slurm" "$b"
  python3 -c "print(f'before / floor = {$b / $f:.2f}x')"
fi
if [ "$PLAIN" = 1 ]; then
  p=$(echo "${plain_times[*]}" | median)
  printf '%-44s %10s\n' "grit --executor slurm --no-sandbox" "$p"
  python3 -c "print(f'slurm without the sandbox / floor = {$p / $f:.2f}x')"
fi
python3 -c "print(f'slurm / floor = {$g / $f:.2f}x, slurm / local = {$g / $l:.2f}x; array elements used: ${elements_used[*]}')"
