#!/usr/bin/env bash
# `grit verify` (issue 13 §3): checking 10,000 objects totalling 1 GiB against the floor measured
# in the same run over the same files: `sha256sum` of every object file (one process, as
# `find | xargs sha256sum` does it), and the same split over the machine's CPUs (`xargs -P`),
# since grit verify hashes on one thread per CPU.
#
# usage: benches/verify.sh [WORKDIR] [RUNS]
#   WORKDIR  a directory on the filesystem a store would live on (default: target/verify-bench)
#   RUNS     repetitions per measurement; the median is reported (default: 3)
# Page cache warm (one untimed pass first): this compares hashing and bookkeeping, not the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(realpath -m "${1:-target/verify-bench}")
RUNS=${2:-3}
N=10000
cargo build --release -q
G=$PWD/target/release/grit
rm -rf "$W"; mkdir -p "$W/files"
trap 'rm -rf "$W"' EXIT
# 10,000 files of 107,374 bytes (1 GiB in all), cut from one random stream.
head -c $((1024 * 1024 * 1024)) /dev/urandom | split -a 5 -d -b 107374 - "$W/files/f"
# (xargs may split the list: several ingests, all into the same store)
ls "$W/files" | head -n $N | sed "s|^|$W/files/|" | xargs "$G" ingest --name blob --db "$W/db" >/dev/null
rm -rf "$W/files"
find "$W/db/objects" -type f > "$W/list"
echo "objects: $(wc -l < "$W/list"), bytes: $(find "$W/db/objects" -type f -printf '%s\n' | awk '{s += $1} END {print s}')"
xargs -a "$W/list" cat > /dev/null
CPUS=$(nproc)

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_it() {
  local times=()
  for _ in $(seq "$RUNS"); do
    local t0; t0=$(now); "$@" > /dev/null 2>&1 || true; local t1; t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
  done
  printf '%s\n' "${times[@]}" | median
}
floor=$(time_it xargs -a "$W/list" sha256sum)
floor_p=$(time_it xargs -a "$W/list" -P "$CPUS" -n 500 sha256sum)
# openssl uses the CPU's SHA instructions, as grit's sha2 does: the stricter floor.
floor_o=$(time_it xargs -a "$W/list" -P "$CPUS" -n 500 openssl dgst -sha256)
verify=$(time_it "$G" verify --db "$W/db")
"$G" verify --db "$W/db" | head -n1
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "median of $RUNS (seconds; ratio to the one-process floor)"
printf '%-40s %7.3f  %s\n' "floor: xargs sha256sum" "$floor" "1.00x"
printf '%-40s %7.3f  %sx\n' "floor: xargs -P $CPUS sha256sum" "$floor_p" "$(ratio "$floor_p" "$floor")"
printf '%-40s %7.3f  %sx\n' "floor: xargs -P $CPUS openssl dgst -sha256" "$floor_o" "$(ratio "$floor_o" "$floor")"
printf '%-40s %7.3f  %sx (%sx of sha256sum -P, %sx of openssl -P)\n' "grit verify" "$verify" "$(ratio "$verify" "$floor")" "$(ratio "$verify" "$floor_p")" "$(ratio "$verify" "$floor_o")"
