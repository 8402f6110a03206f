#!/usr/bin/env bash
# grit serve under load (issue 12): with 10,000 run records and 100,000 resources in the store,
#   1. GET /api/v1/runs?limit=50 req/s and latency, beside GET /api/v1/healthz (the floor: the
#      HTTP stack, auth-free, no store) measured in the same run, with wrk;
#   2. trigger -> first task started, with an empty queue (from the run record's queued_at and
#      the first task's started_at, both written by the server), repeated;
#   3. the server's RSS idle, and after 100,000+ requests;
#   4. the server's RSS while it executes runs: RSS_RUNS (default 50) more runs, one after the
#      other, each with a new parameter value so its task really runs through the FUSE capture,
#      RSS printed after each 10 (growth here was glibc keeping fuser's 16 MiB buffer of each
#      run in its malloc arenas; src/serve/memory.rs).
#
#   benches/serve.sh [path/to/grit]     (default target/release/grit; needs wrk, sqlite3, curl)
#
# Seeding, honestly: the store is created by a real `grit run` of the bench manifest (one real
# task, one real object); then SQL adds 10,000 finished `serve_runs` records (the shape the server
# writes) and 99,999 history resources that all name that run's real object, so the store stays
# consistent (every resource's object exists). See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
grit=$(realpath "${1:-target/release/grit}")
repeat=${REPEAT:-3}
seconds=${SECONDS_PER_RUN:-10}
triggers=${TRIGGERS:-25}
rss_runs=${RSS_RUNS:-50}
for tool in wrk sqlite3 curl; do
  command -v "$tool" >/dev/null || { echo "serve.sh: needs $tool (apt-get install $tool)" >&2; exit 2; }
done

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/bench.toml" <<'EOF'
[pipeline]
name = "bench"

[pipeline.params]
n = { default = "0", description = "a new value makes the run's task new" }

[[step]]
name = "tick"
once = true
params = ["n"]
script = 'echo "$GRIT_PARAM_N" > "$OUTPUT_DIR/tick"'
EOF
db=$work/db
"$grit" run -m "$work/bench.toml" --db "$db" >/dev/null 2>&1
sqlite_db=$db/grit.sqlite
hash=$(sqlite3 "$sqlite_db" "SELECT hash FROM resources LIMIT 1")
started=$(date +%s.%N)
sqlite3 "$sqlite_db" <<EOF
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
INSERT INTO serve_runs (pipeline, status, trigger, params, queued_at, not_before_ms, started_at,
                        finished_at, first_engine_run, engine_run, steps)
SELECT 'bench', CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, 'api', '{"n":"' || i || '"}',
       strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' minutes'), 0,
       strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' minutes', '+1 seconds'),
       strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || i || ' minutes', '+2 seconds'), 1, 1,
       '[{"name":"tick","executed":1,"succeeded":1,"failed":0,"running":0,"pending":0}]'
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 99999)
INSERT INTO resources (name, hash, size, task_id, run_id, created_at, live)
SELECT 'seeded_' || i, '$hash', 2, NULL, 1, '2026-01-01T00:00:00.000Z', 0 FROM n;
COMMIT;
EOF
runs=$(sqlite3 "$sqlite_db" "SELECT count(*) FROM serve_runs")
resources=$(sqlite3 "$sqlite_db" "SELECT count(*) FROM resources")
printf 'seeded %s run records and %s resources in %.1fs\n' "$runs" "$resources" "$(echo "$(date +%s.%N) - $started" | bc)"

"$grit" serve -m "$work/bench.toml" --db "$db" --listen 127.0.0.1:0 2>"$work/server.log" &
server_pid=$!
url=
for _ in $(seq 300); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | cut -d' ' -f3 || true)
  [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { cat "$work/server.log" >&2; exit 1; }
token=$("$grit" token --role operator --db "$db")
rss() { awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status"; }
sleep 1
idle_rss=$(rss)
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "idle RSS: $((idle_rss / 1024)) MiB ($idle_rss KiB)"

cat >"$work/auth.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $token"
EOF
# wrk --latency prints the percentiles; pick req/s and p99.
measure() { # path, label
  local out
  out=$(wrk -t2 -c8 -d"${seconds}s" --latency -s "$work/auth.lua" "$url$1")
  local rps p99 requests
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  printf '%-28s %10s req/s   p99 %8s   (%s requests)\n' "$2" "$rps" "$p99" "$requests"
  if grep -q 'Non-2xx' <<<"$out"; then echo "  $(grep 'Non-2xx' <<<"$out")"; fi
}
# (Into a file: `curl | head -c` fails the script under pipefail when head closes first.)
curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/runs?limit=50" -o "$work/sample.json"
head -c 200 "$work/sample.json"; echo
for i in $(seq "$repeat"); do
  echo "-- round $i (load $(cut -d' ' -f1 /proc/loadavg))"
  measure /api/v1/healthz "GET /healthz (floor)"
  measure "/api/v1/runs?limit=50" "GET /runs?limit=50"
done
after_rss=$(rss)
echo "RSS after the load: $((after_rss / 1024)) MiB ($after_rss KiB), idle was $((idle_rss / 1024)) MiB"
measure "/api/v1/runs?limit=50" "GET /runs?limit=50 (again)"
again_rss=$(rss)
echo "RSS after another round: $((again_rss / 1024)) MiB ($again_rss KiB)"

# Trigger -> first task started: each trigger has a new `n`, so its task really runs.
latencies=()
for i in $(seq "$triggers"); do
  id=$(curl -fsS -H "Authorization: Bearer $token" -d "{\"params\":{\"n\":\"t$i-$RANDOM\"}}" \
    "$url/api/v1/pipelines/bench/runs" | sed -E 's/.*"run_id":"([^"]+)".*/\1/')
  for _ in $(seq 500); do
    curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/runs/$id" | grep -q '"status":"\(succeeded\|failed\)"' && break
    sleep 0.02
  done
  queued=$(curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/runs/$id" | sed -E 's/.*"queued_at":"([^"]+)".*/\1/')
  first=$(curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/runs/$id/tasks" | grep -o '"started_at":"[^"]*"' | head -1 | cut -d'"' -f4)
  [ -n "$first" ] || { echo "run $id started no task" >&2; continue; }
  ms=$(python3 -c "
from datetime import datetime
f = lambda s: datetime.strptime(s, '%Y-%m-%dT%H:%M:%S.%fZ')
print(round((f('$first') - f('$queued')).total_seconds() * 1000))")
  latencies+=("$ms")
done
printf '%s\n' "${latencies[@]}" | sort -n >"$work/lat"
n=$(wc -l <"$work/lat")
median=$(sed -n "$(((n + 1) / 2))p" "$work/lat")
p95=$(sed -n "$(((n * 95 + 99) / 100))p" "$work/lat")
echo "trigger -> first task started ($n runs, empty queue): median ${median} ms, p95 ${p95} ms, max $(tail -1 "$work/lat") ms"
echo "RSS after the triggered runs: $(($(rss) / 1024)) MiB"

# RSS over executed runs: it must level off, not grow with every run.
echo "RSS while executing runs (before: $(($(rss) / 1024)) MiB):"
for i in $(seq "$rss_runs"); do
  id=$(curl -fsS -H "Authorization: Bearer $token" -d "{\"params\":{\"n\":\"rss$i-$RANDOM\"}}" \
    "$url/api/v1/pipelines/bench/runs" | sed -E 's/.*"run_id":"([^"]+)".*/\1/')
  for _ in $(seq 1000); do
    curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/runs/$id" | grep -q '"status":"\(succeeded\|failed\)"' && break
    sleep 0.02
  done
  if [ $((i % 10)) = 0 ]; then
    echo "  after $i runs: RSS $(($(rss) / 1024)) MiB, $(ls "/proc/$server_pid/task" | wc -l) threads"
  fi
done
echo "final RSS: $(($(rss) / 1024)) MiB"
