#!/usr/bin/env bash
# The cost of the `dataflow_generation` triggers (schema v7) on the publish path: the row writes a
# tiny task causes (its input resource, the task with its reason, marked running, marked
# succeeded, its output row: five trigger firings), for 100,000 tasks in one transaction, on a
# real grit store with its triggers and on a copy without them (DROP TRIGGER). Alternating runs;
# prints each run's CPU time and the medians (user CPU is the measure: the machine may be loaded).
#
#   benches/generation-triggers.sh        (GRIT: the binary, default target/release/grit; RUNS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
grit=${GRIT:-target/release/grit}
runs=${RUNS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/grit.toml" <<'TOML'
[[step]]
name = "seed"
once = true
script = 'echo 1 > "$OUTPUT_DIR/item_1"'
TOML
"$grit" run -q --no-sandbox --capture dir -m "$work/grit.toml" --db "$work/db" >/dev/null
cp "$work/db/grit.sqlite" "$work/with.sqlite"
cp "$work/db/grit.sqlite" "$work/without.sqlite"
sqlite3 "$work/without.sqlite" "SELECT 'DROP TRIGGER ' || name || ';' FROM sqlite_master WHERE type = 'trigger'" \
  | sqlite3 "$work/without.sqlite"
echo "triggers: $(sqlite3 "$work/with.sqlite" "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'") with," \
  "$(sqlite3 "$work/without.sqlite" "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'") without"

cat > "$work/publish.sql" <<'SQL'
.timer on
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO resources (name, hash, size, created_at, live) SELECT 'r' || i, 'h' || i, 1, 'now', 1 FROM n;
INSERT INTO tasks (step_version_id, input_resource_id, state, created_run, reason, reason_run)
  SELECT 1, id, 'pending', 1, 'new input', 1 FROM resources WHERE name LIKE 'r%';
UPDATE tasks SET state = 'running', last_run = 1, started_at = 'now' WHERE state = 'pending';
UPDATE tasks SET state = 'succeeded', attempts = attempts + 1, finished_at = 'now' WHERE state = 'running';
INSERT OR IGNORE INTO outputs (task_id, resource_id) SELECT id, input_resource_id FROM tasks WHERE input_resource_id IS NOT NULL;
ROLLBACK;
SQL

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A user
for i in $(seq "$runs"); do
  for which in with without; do
    read -r real cpu < <(sqlite3 "$work/$which.sqlite" < "$work/publish.sql" \
      | awk '/Run Time/ { r += $4; u += $6 } END { printf "%.3f %.3f\n", r, u }')
    printf '%-8s run %d: real %s s, user %s s\n' "$which" "$i" "$real" "$cpu"
    user[$which]+="$cpu "
  done
done
with=$(printf '%s\n' ${user[with]} | median)
without=$(printf '%s\n' ${user[without]} | median)
echo "median user CPU for 100,000 tasks: with triggers $with s, without $without s"
python3 -c "print(f'triggers: {($with - $without) * 10:.2f} us of CPU per task (100,000 tasks, 5 row writes each)')"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
