#!/usr/bin/env bash
# Web UI of `grit serve` (issue 14): time and size of every page with 10,000 runs and 100,000
# resources in the store. Goal: each page renders in <= 20 ms server-side and is <= 100 KB.
#
# Seeding: one real `grit run` of source steps that write 100,000 files (through the FUSE
# capture, as any run) gives 100,000 real resources, tasks and provenance; one real server run
# gives a run record, which is then copied 10,000 times in the server's own table
# (`serve_runs`, with distinct times), because 10,000 real runs would take most of an hour.
#
# KEEP=1 keeps the seeded store (its path is printed). Each page is fetched 7 times over loopback with curl; the median of `time_total` is shown
# beside the floor measured in the same run: GET /api/v1/healthz (an answer with no work).
# Times include the HTTP round trip, so the server-side time is at most what is shown.
#
#   benches/serve-ui.sh            (GRIT: the binary, default target/release/grit)
set -euo pipefail
cd "$(dirname "$0")/.."
grit=${GRIT:-target/release/grit}
runs=${RUNS:-10000}
files=${FILES:-100000}
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Ten `once` sources of files/10 files each (a task keeps each file it writes open until it
# ends, so one source of 100,000 would pass the usual limit of 20,000 open files), and a map step.
{
  echo '[pipeline]'
  echo 'name = "bench"'
  for k in 0 1 2 3 4 5 6 7 8 9; do
    cat <<TOML

[[step]]
name = "many$k"
once = true
script = '''awk -v dir="\$OUTPUT_DIR" -v n=$((files / 10)) 'BEGIN { for (i = 1; i <= n; i++) { f = sprintf("%s/r${k}_%06d.txt", dir, i); print i > f; close(f) } }' '''
TOML
  done
  cat <<TOML

[[step]]
name = "pick"
inputs = ["r0_000042.txt"]
script = 'cat "\$INPUT_FILE" "\$INPUT_FILE" > "\$OUTPUT_DIR/pick.txt"'
TOML
} > "$work/bench.toml"

echo "seeding: $files resources through a real run ..." >&2
start=$(date +%s)
# One task at a time: the open files of parallel sources add up in the one grit process.
"$grit" run -j 1 -m "$work/bench.toml" --db "$work/db" --no-sandbox --json >/dev/null
echo "  took $(( $(date +%s) - start )) s" >&2

"$grit" serve -m "$work/bench.toml" --db "$work/db" --listen 127.0.0.1:0 --no-sandbox 2>"$work/serve.log" &
server=$!
for _ in $(seq 200); do grep -q "listening on" "$work/serve.log" && break; sleep 0.05; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1)
operator=$("$grit" token --role operator --db "$work/db")
api() { curl -sf -H "Authorization: Bearer $operator" "$@"; }
run_id=$(api -X POST "$url/api/v1/pipelines/bench/runs" | sed 's/.*"run_id":"\([^"]*\)".*/\1/')
for _ in $(seq 600); do
  api "$url/api/v1/runs/$run_id" | grep -q '"status":"succeeded"' && break; sleep 0.1
done
echo "seeding: $runs run records ..." >&2
sqlite3 "$work/db/grit.sqlite" <<SQL
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $runs - 1)
INSERT INTO serve_runs (pipeline, status, trigger, params, queued_at, started_at, finished_at,
                        engine_run, first_engine_run, resumed, reason, steps, not_before_ms)
SELECT pipeline, CASE WHEN i % 10 = 0 THEN 'failed' ELSE status END, trigger, params,
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || i || ' minutes'),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || i || ' minutes'),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || i || ' minutes', '+2 seconds'),
       engine_run, first_engine_run, resumed, reason, steps, not_before_ms
  FROM serve_runs, n WHERE serve_runs.id = 1;
SQL
counts=$(sqlite3 "$work/db/grit.sqlite" "SELECT (SELECT count(*) FROM serve_runs), (SELECT count(*) FROM resources)")
echo "store: ${counts%|*} runs, ${counts#*|} resources" >&2

# A browser session: the login form's nonce, then the token.
jar="$work/jar"
nonce=$(curl -s -c "$jar" "$url/ui/login" | grep -o 'name="csrf" value="[0-9a-f]*"' | grep -o '[0-9a-f]\{32\}')
curl -s -b "$jar" -c "$jar" -o /dev/null --data-urlencode "token=$operator" -d "csrf=$nonce" "$url/ui/login"

hash=$(sqlite3 "$work/db/grit.sqlite" "SELECT hash FROM resources WHERE name = 'pick.txt'")
deep_runs=$(curl -s -b "$jar" "$url/ui/runs" | grep -o 'cursor=[0-9a-f]*' | head -1)
deep_res=$(curl -s -b "$jar" "$url/ui/resources" | grep -o 'after_name=[^"]*' | head -1 | sed 's/&amp;/\&/g')
pages=(
  "/ui/"
  "/ui/pipelines/bench"
  "/ui/runs"
  "/ui/runs?$deep_runs"
  "/ui/runs?status=failed"
  "/ui/runs/$run_id"
  "/ui/tasks/bench.2"
  "/ui/resources"
  "/ui/resources?pipeline=bench&q=&show=live&$deep_res"
  "/ui/resources?show=history"
  "/ui/resources?q=r5_0"
  "/ui/resources/$hash"
)

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
measure() { # path [auth] -> "median_ms bytes"
  local times=() size=0
  for _ in 1 2 3 4 5 6 7; do
    read -r t s < <(curl -s -b "$jar" -o /dev/null -w '%{time_total} %{size_download}\n' "$url$1")
    times+=("$t"); size=$s
  done
  printf '%s\n' "${times[@]}" | median | awk -v s="$size" '{ printf "%.1f %d\n", $1 * 1000, s }'
}

read -r floor _ < <(measure "/api/v1/healthz")
printf '%-58s %9s %9s\n' "page (median of 7)" "ms" "KB"
printf '%-58s %9s %9s\n' "floor: GET /api/v1/healthz" "$floor" "-"
worst=0
for p in "${pages[@]}"; do
  read -r ms bytes < <(measure "$p")
  printf '%-58s %9s %9.1f\n' "${p:0:58}" "$ms" "$(echo "$bytes / 1024" | bc -l)"
  worst=$(echo "if ($ms > $worst) $ms else $worst" | bc -l)
  if [ "$bytes" -gt 102400 ]; then echo "  over 100 KB: $p" >&2; fi
done
# The Pipeline page keeps its step graph and counts until the data they read changes (the store's
# dataflow generation, kept by SQLite triggers whoever writes). Measured after real commits made
# beside the server with sqlite3 before each fetch: one to the server's run records (which the
# models do not read: the kept value serves), and one that changes a task's state (the first view
# after it computes them).
changed=()
for i in 1 2 3 4 5 6 7; do
  sqlite3 "$work/db/grit.sqlite" "UPDATE serve_runs SET reason = 'bench change $i' WHERE id = 2"
  changed+=("$(curl -s -b "$jar" -o /dev/null -w '%{time_total}' "$url/ui/pipelines/bench")")
done
miss=$(printf '%s\n' "${changed[@]}" | median | awk '{ printf "%.1f", $1 * 1000 }')
printf '%-58s %9s %9s\n' "/ui/pipelines/bench, first view after a run record changed" "$miss" "-"
pick=$(sqlite3 "$work/db/grit.sqlite" "SELECT t.id FROM tasks t JOIN step_versions v ON v.id = t.step_version_id WHERE v.name = 'pick' AND v.current = 1")
changed=()
for i in 1 2 3 4 5 6 7; do
  sqlite3 "$work/db/grit.sqlite" "UPDATE tasks SET state = CASE state WHEN 'succeeded' THEN 'failed' ELSE 'succeeded' END WHERE id = $pick"
  changed+=("$(curl -s -b "$jar" -o /dev/null -w '%{time_total}' "$url/ui/pipelines/bench")")
done
sqlite3 "$work/db/grit.sqlite" "UPDATE tasks SET state = 'succeeded' WHERE id = $pick"
miss=$(printf '%s\n' "${changed[@]}" | median | awk '{ printf "%.1f", $1 * 1000 }')
printf '%-58s %9s %9s\n' "/ui/pipelines/bench, first view after a task changed" "$miss" "-"
# When a run ends the server computes them ahead of the next view: a real run through the API
# (nothing to do: the sources are `once`), one second for a person to look, then the page.
after_run=()
for i in 1 2 3; do
  id=$(api -X POST "$url/api/v1/pipelines/bench/runs" | sed 's/.*"run_id":"\([^"]*\)".*/\1/')
  for _ in $(seq 600); do
    api "$url/api/v1/runs/$id" | grep -q '"status":"\(succeeded\|failed\)"' && break; sleep 0.05
  done
  sleep 1
  after_run+=("$(curl -s -b "$jar" -o /dev/null -w '%{time_total}' "$url/ui/pipelines/bench")")
done
warm=$(printf '%s\n' "${after_run[@]}" | median | awk '{ printf "%.1f", $1 * 1000 }')
printf '%-58s %9s %9s\n' "/ui/pipelines/bench, a second after a run ended" "$warm" "-"
echo "slowest page: ${worst} ms (goal <= 20 ms); floor ${floor} ms"
