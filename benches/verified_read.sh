#!/usr/bin/env bash
# Verified reads (issue 13 §1): the cost of reading a 1 GiB object through grit's verified reader,
# against the floors measured in the same run on the same file: `sha256sum` of the object (the
# issue's floor) and `openssl dgst -sha256` (which, unlike Debian's sha256sum, uses the CPU's SHA
# instructions, as grit's sha2 does: the stricter floor).
#
# usage: benches/verified_read.sh [WORKDIR] [RUNS]
#   WORKDIR  a directory on the filesystem a store would live on (default: target/verified-bench)
#   RUNS     repetitions per measurement; the median is reported (default: 3)
# Page cache warm for everything (one untimed read first), so the numbers compare hashing and
# copying, not the disk. Measured:
#   grit verify           one verified read of the object (plus the database checks)
#   task input            a `grit run` whose only task reads the object: the input is verified
#                         before the task starts (the script is `true`)
#   grit cat > /dev/null  objects over 64 MiB: a verify pass, then a re-checking streaming pass
#   grit export --to      a verified read plus writing the copy (floor: sha256sum + cp)
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(realpath -m "${1:-target/verified-bench}")
RUNS=${2:-3}
cargo build --release -q
G=$PWD/target/release/grit
rm -rf "$W"; mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
head -c $((1024 * 1024 * 1024)) /dev/urandom > "$W/big"
cat > "$W/p.toml" <<'TOML'
[[step]]
name = "read"
inputs = ["big"]
script = 'true'
TOML
"$G" ingest --name big "$W/big" --db "$W/db" >/dev/null
rm -f "$W/big"
HASH=$("$G" legacy-export big --db "$W/db")
OBJ="$W/db/objects/${HASH:0:2}/${HASH:2:2}/${HASH:4}"
cat "$OBJ" > /dev/null

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_it() { # label, command...
  local label=$1; shift
  local times=()
  for _ in $(seq "$RUNS"); do
    local t0; t0=$(now); "$@" > /dev/null 2>&1; local t1; t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
  done
  printf '%s\n' "${times[@]}" | median
}
floor=$(time_it sha256sum sha256sum "$OBJ")
openssl_t=$(time_it openssl openssl dgst -sha256 "$OBJ")
floor_cp=$(time_it "sha256sum+cp" sh -c "sha256sum '$OBJ' && cp '$OBJ' '$W/copy' && rm -f '$W/copy'")
verify=$(time_it verify "$G" verify --db "$W/db")
cat_t=$(time_it cat sh -c "'$G' cat $HASH --db '$W/db' > /dev/null")
export_t=$(time_it export sh -c "rm -rf '$W/out' && '$G' export big --to '$W/out' --db '$W/db'")
# Each run gets a new version of the step (a changed comment), so its task runs and its input is
# verified again.
run_t=$(time_it run sh -c "sed -i \"s/^script = .*/script = 'true # \$(date +%N)'/\" '$W/p.toml' && '$G' run -q --no-sandbox --capture dir -m '$W/p.toml' --db '$W/db'")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "1 GiB object, page cache warm, median of $RUNS (seconds; ratio to the floor)"
printf '%-36s %7.3f  %s\n' "floor: sha256sum" "$floor" "1.00x"
printf '%-36s %7.3f  %sx  (grit verify: %sx of it)\n' "floor: openssl dgst -sha256" "$openssl_t" "$(ratio "$openssl_t" "$floor")" "$(ratio "$verify" "$openssl_t")"
printf '%-36s %7.3f  %sx\n' "grit verify (one verified read)" "$verify" "$(ratio "$verify" "$floor")"
printf '%-36s %7.3f  %sx\n' "grit run, task reading it (verify)" "$run_t" "$(ratio "$run_t" "$floor")"
printf '%-36s %7.3f  %sx\n' "grit cat > /dev/null (two passes)" "$cat_t" "$(ratio "$cat_t" "$floor")"
printf '%-36s %7.3f  %s\n' "floor: sha256sum + cp" "$floor_cp" "1.00x"
printf '%-36s %7.3f  %sx\n' "grit export --to (verified copy)" "$export_t" "$(ratio "$export_t" "$floor_cp")"
