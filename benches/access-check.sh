#!/usr/bin/env bash
# Cost of the FUSE capture's access check (issue 20): one check per request that names a task's
# directory or file (lookup, getattr, create, open, ...; reads and writes on an open file are not
# checked). Prints nanoseconds per check for each kind of task identity, next to the floor
# measured in the same run: one stat(2) in /proc, the least a check through /proc can cost.
#
# usage: benches/access-check.sh
# Builds the release test binary and runs its ignored `bench_access_check` test.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${GRIT_BENCH_BIN:-$(cargo test --release --lib --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)}
[ -x "$bin" ] || { echo "could not build the test binary" >&2; exit 1; }
echo "access check: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" capture::fuse::access::tests::bench_access_check --exact --ignored --nocapture 2>&1 |
  sed -n 's/^BENCH ns_per_check //p' | tr ' ' '\n' | sed 's/=/ /' |
  awk '{ printf "  %-16s %s\n", $1, ($1 == "n" ? $2 " checks" : $2 " ns") }'
