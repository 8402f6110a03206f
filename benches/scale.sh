#!/usr/bin/env bash
# Issue 16's targets: the per-task cost of grit's default mode (sandbox + FUSE capture) and of the
# plain executor (--no-sandbox --capture dir) against the engine.sh floor, measured in the same
# run; flatness from 1,000 tasks up; a chain of 20 one-line steps; a 1 GiB file through a `cat`
# step; the no-op rerun. make (and Snakemake, when `SNAKEMAKE` names one) run the same fan-out
# and chain. Prints numbers, never judges them.
#
#   benches/scale.sh                          # SIZES="1000 10000", ROUNDS=3, chain, 1 GiB, no-op
#   SIZES="100000" ROUNDS=1 PARTS=fanout benches/scale.sh    # the long one, once
#   SNAKEMAKE=/path/to/venv/bin/snakemake benches/scale.sh   # add Snakemake's columns
#   KINDS="floor-sh grit-default" benches/scale.sh           # only these fan-out kinds
#   PARTS=source SOURCE_FILES=100000 benches/scale.sh         # one task writing 100,000 files
#
# Fan-out: a `once` source writes N files item_1..item_N (run first, untimed); the timed run is
# the map step, one task per item: `cp "$INPUT_FILE" "$OUTPUT_DIR/out_$GRIT_INPUT_NAME"`, N tasks
# from "input published" to "outputs published". Floors: the same per-item work through
# `xargs -P JOBS sh -ec 'mkdir …; cp …'` (engine.sh's floor), and the same with `bash -c`, since
# grit's default shell is bash in strict mode (`bash -euo pipefail -c`), which costs more to start
# than dash. The kinds run in turn, ROUNDS times, and the medians are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
GRIT=${GRIT_BENCH_BIN:-$PWD/target/release/grit}
JOBS=${JOBS:-2}
SIZES=${SIZES:-"1000 10000"}
ROUNDS=${ROUNDS:-3}
PARTS=${PARTS:-"fanout chain big noop"}
work=$(mktemp -d /var/tmp/grit-scale.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Nothing is deleted between timed runs: see benches/discard.sh.
source benches/discard.sh

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), jobs: $JOBS, grit: $GRIT"
# "<wall seconds> <peak RSS MiB>" of a command (its output is discarded).
timed() {
  /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; return 1; }
  awk '{ printf "%s %.1f\n", $1, $2 / 1024 }' "$work/time.out"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

fanout_manifest() { # N
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

# One timed fan-out of kind $1 over $2 items; prints "<seconds> <peak RSS MiB>".
fanout_once() {
  local kind=$1 n=$2 dir="$work/fan-$1-$2"
  discard "$dir"
  mkdir -p "$dir/in" "$dir/out"
  case $kind in
    floor-sh|floor-bash|make|snakemake)
      (cd "$dir/in" && i=1 && while [ $i -le "$n" ]; do echo $i > item_$i; i=$((i+1)); done) ;;
  esac
  case $kind in
    floor-sh)
      seq 1 "$n" > "$dir/list"
      timed xargs -a "$dir/list" -P "$JOBS" -I{} sh -ec 'mkdir "$0/out/t{}" && cp "$0/in/item_{}" "$0/out/t{}/out_item_{}"' "$dir" ;;
    floor-bash)
      seq 1 "$n" > "$dir/list"
      timed xargs -a "$dir/list" -P "$JOBS" -I{} bash -euo pipefail -c 'mkdir "$0/out/t{}" && cp "$0/in/item_{}" "$0/out/t{}/out_item_{}"' "$dir" ;;
    make)
      printf 'N := $(shell seq 1 %s)\nall: $(foreach i,$(N),out/t$(i)/out)\nout/t%%/out: in/item_%%\n\tmkdir -p out/t$* && cp $< $@\n' "$n" > "$dir/Makefile"
      timed make -s -C "$dir" -j "$JOBS" ;;
    snakemake)
      printf 'rule all:\n    input: expand("out/t{i}/out_item_{i}", i=range(1, %s + 1))\nrule copy:\n    input: "in/item_{i}"\n    output: "out/t{i}/out_item_{i}"\n    shell: "cp {input} {output}"\n' "$n" > "$dir/Snakefile"
      timed "$SNAKEMAKE" -q -s "$dir/Snakefile" -d "$dir" -j "$JOBS" ;;
    grit-default|grit-plain)
      local flags=()
      [ "$kind" = grit-plain ] && flags=(--no-sandbox --capture dir)
      fanout_manifest "$n" > "$dir/pipeline.toml"
      # The source (N outputs in one task) is not part of the timed fan-out; its wall and
      # peak RSS go to stderr, since one task holding N outputs is the run's memory peak.
      read -r src_secs src_mib < <(timed "$GRIT" run -q "${flags[@]}" -m "$dir/pipeline.toml" --db "$dir/db" --step items)
      echo "  ($kind, $n: the source task writing $n files took $src_secs s, peak RSS $src_mib MiB)" >&2
      timed "$GRIT" run -q "${flags[@]}" -j "$JOBS" -m "$dir/pipeline.toml" --db "$dir/db" ;;
  esac
  discard "$dir"
}

if [[ " $PARTS " == *" fanout "* ]]; then
  kinds=${KINDS:-"floor-sh floor-bash grit-default grit-plain make"}
  [ -n "${SNAKEMAKE:-}" ] && kinds="$kinds snakemake"
  printf '\n%-14s %8s %10s %10s %9s %9s %14s %12s\n' kind tasks "wall (s)" tasks/s "vs sh" "vs bash" "added ms/task" "peak RSS"
  for n in $SIZES; do
    declare -A walls=() rss=()
    for _ in $(seq "$ROUNDS"); do
      for kind in $kinds; do
        read -r secs mib < <(fanout_once "$kind" "$n")
        walls[$kind]+="$secs "
        rss[$kind]=$mib
      done
    done
    declare -A med=()
    for kind in $kinds; do med[$kind]=$(printf '%s\n' ${walls[$kind]} | median); done
    for kind in $kinds; do
      awk -v k="$kind" -v n="$n" -v w="${med[$kind]}" -v sh="${med[floor-sh]:-0}" -v b="${med[floor-bash]:-0}" -v r="${rss[$kind]}" -v all="${walls[$kind]}" 'BEGIN {
        printf "%-14s %8d %10.2f %10.0f %8s %8s %14s %9s MiB   runs: %s\n", k, n, w, n / w,
          (sh > 0 ? sprintf("%.2fx", w / sh) : "-"), (b > 0 ? sprintf("%.2fx", w / b) : "-"),
          (sh > 0 ? sprintf("%+.3f", (w - sh) * 1000 / n) : "-"), r, all }'
    done
    unset walls rss med
  done
fi

if [[ " $PARTS " == *" chain "* ]]; then
  # 20 one-line steps, each reading the previous one's output.
  dir="$work/chain"; mkdir -p "$dir"
  {
    printf '[[step]]\nname = "s1"\nonce = true\nscript = %s\n' "'echo 1 > \$OUTPUT_DIR/o1'"
    for i in $(seq 2 20); do
      printf '\n[[step]]\nname = "s%d"\ninputs = ["o%d"]\nscript = %s\n' "$i" $((i - 1)) "'echo $i >> \$OUTPUT_DIR/o$i'"
    done
  } > "$dir/pipeline.toml"
  {
    printf 'all: o20\no1:\n\techo 1 > o1\n'
    for i in $(seq 2 20); do printf 'o%d: o%d\n\techo %d >> o%d\n' "$i" $((i - 1)) "$i" "$i"; done
  } > "$dir/Makefile"
  printf '\n%-34s %s\n' "chain of 20 one-line steps" "wall (s), median of $ROUNDS (each)"
  for kind in grit-default grit-plain make; do
    runs=()
    for _ in $(seq "$ROUNDS"); do
      discard "$dir/db" "$dir"/o[0-9]*
      case $kind in
        grit-default) read -r secs _ < <(timed "$GRIT" run -q -m "$dir/pipeline.toml" --db "$dir/db") ;;
        grit-plain) read -r secs _ < <(timed "$GRIT" run -q --no-sandbox --capture dir -m "$dir/pipeline.toml" --db "$dir/db") ;;
        make) read -r secs _ < <(timed make -s -C "$dir") ;;
      esac
      runs+=("$secs")
    done
    printf '%-34s %s   runs: %s\n' "$kind" "$(printf '%s\n' "${runs[@]}" | median)" "${runs[*]}"
  done
  discard "$dir"
fi

if [[ " $PARTS " == *" big "* ]]; then
  # One 1 GiB file through a `cat` step, default mode, vs `cat` + `sha256sum` of the same file.
  dir="$work/big"; mkdir -p "$dir/in"
  head -c 1073741824 /dev/urandom > "$dir/in/big"
  printf '[[step]]\nname = "copy"\ninputs = ["big"]\nscript = %s\n' "'cat \"\$INPUT_FILE\" > \"\$OUTPUT_DIR/copy\"'" > "$dir/pipeline.toml"
  printf '\n%-34s %10s %10s %s\n' "1 GiB through a cat step" "wall (s)" "peak RSS" "(median of $ROUNDS)"
  floor=(); grit=(); grss=0
  for _ in $(seq "$ROUNDS"); do
    # Deleted, not discarded: a few files free few inodes, and each round's 1 GiB would add up.
    rm -rf "$dir/db" "$dir/out"
    "$GRIT" ingest --db "$dir/db" "$dir/in/big" >/dev/null 2>&1
    cat "$dir/in/big" > /dev/null # warm, like the object grit reads
    read -r secs _ < <(timed sh -c 'cat "$1" > "$2" && sha256sum "$2"' sh "$dir/in/big" "$dir/out")
    floor+=("$secs")
    read -r secs mib < <(timed "$GRIT" run -q -m "$dir/pipeline.toml" --db "$dir/db")
    grit+=("$secs"); grss=$mib
  done
  f=$(printf '%s\n' "${floor[@]}" | median); g=$(printf '%s\n' "${grit[@]}" | median)
  printf '%-34s %10s %10s   runs: %s\n' "floor: cat > file && sha256sum" "$f" "-" "${floor[*]}"
  awk -v g="$g" -v f="$f" -v r="$grss" -v all="${grit[*]}" 'BEGIN { printf "%-34s %10s %6s MiB   %.2fx the floor; runs: %s\n", "grit default mode", g, r, g / f, all }'
  rm -rf "$dir"
fi

if [[ " $PARTS " == *" source "* ]]; then
  # One task writing N small files (a fan-out's source), timed, against a floor that does what
  # grit must: write the files, hash each (sha256sum), and make them durable (`sync -f`: one
  # syncfs of the filesystem). Peak RSS is the issue's 64 MiB target.
  n=${SOURCE_FILES:-100000}
  dir="$work/source"; mkdir -p "$dir"
  printf '[[step]]\nname = "items"\nonce = true\nscript = %s\n' "'i=1; while [ \$i -le $n ]; do echo \$i > \$OUTPUT_DIR/item_\$i; i=\$((i+1)); done'" > "$dir/pipeline.toml"
  printf '\n%-34s %10s %10s %s\n' "one task writing $n files" "wall (s)" "peak RSS" "(median of $ROUNDS)"
  floor=(); gd=(); gp=(); rd=0; rp=0
  for _ in $(seq "$ROUNDS"); do
    discard "$dir/out" && mkdir "$dir/out"
    read -r secs _ < <(timed sh -c 'cd "$1" && i=1; while [ $i -le "$2" ]; do echo $i > item_$i; i=$((i+1)); done; ls | xargs sha256sum > /dev/null; sync -f .' sh "$dir/out" "$n")
    floor+=("$secs")
    discard "$dir/db"
    read -r secs rd < <(timed "$GRIT" run -q -m "$dir/pipeline.toml" --db "$dir/db")
    gd+=("$secs")
    discard "$dir/db"
    read -r secs rp < <(timed "$GRIT" run -q --no-sandbox --capture dir -m "$dir/pipeline.toml" --db "$dir/db")
    gp+=("$secs")
  done
  f=$(printf '%s\n' "${floor[@]}" | median)
  printf '%-34s %10s %10s   runs: %s\n' "floor: sh + sha256sum + sync -f" "$f" "-" "${floor[*]}"
  for kind in default plain; do
    if [ $kind = default ]; then runs=("${gd[@]}"); r=$rd; else runs=("${gp[@]}"); r=$rp; fi
    g=$(printf '%s\n' "${runs[@]}" | median)
    awk -v k="grit $kind" -v g="$g" -v f="$f" -v r="$r" -v all="${runs[*]}" 'BEGIN { printf "%-34s %10s %6s MiB   %.2fx the floor; runs: %s\n", k, g, r, g / f, all }'
  done
  discard "$dir"
fi

if [[ " $PARTS " == *" noop "* ]]; then
  # No-op rerun at 100,000 resources (50,000 items and their 50,000 copies), made with the plain
  # executor (the quicker one; the rerun does not run tasks).
  n=${NOOP_ITEMS:-50000}
  dir="$work/noop"; mkdir -p "$dir"
  fanout_manifest "$n" > "$dir/pipeline.toml"
  "$GRIT" run -q --no-sandbox --capture dir -j "$JOBS" -m "$dir/pipeline.toml" --db "$dir/db" >/dev/null
  printf '\n%-34s %10s %10s\n' "no-op rerun, $((2 * n)) resources" "wall (s)" "peak RSS"
  for attempt in 1 2 3; do
    read -r secs mib < <(timed "$GRIT" run -q -m "$dir/pipeline.toml" --db "$dir/db")
    printf '%-34s %10s %6s MiB\n' "default mode, run $attempt" "$secs" "$mib"
  done
  discard "$dir"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
