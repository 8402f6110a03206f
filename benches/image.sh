#!/usr/bin/env bash
# Costs of container steps (issue 15, item 5), each next to a floor measured in the same run:
# 1. the digest of a directory image, paid at every manifest load (`grit validate` here), against
#    `sha256sum` of every file of the tree (the same bytes read and hashed, one process);
# 2. a task in an image against the same task on the host's root (both sandboxed): the overlay,
#    the pivot and the image's /dev are the difference.
#
# usage: benches/image.sh [TREE] [TASKS]
#   TREE: a directory copied as the image (default /usr/lib/x86_64-linux-gnu); TASKS: map tasks (default 200).
# Needs /bin/busybox (busybox-static) for the task part.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=${1:-/usr/lib/x86_64-linux-gnu}
tasks=${2:-200}
cargo build --release -q
grit=$PWD/target/release/grit
work=$(mktemp -d /var/tmp/grit-image-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
source benches/discard.sh # nothing is deleted between timed runs
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "image bench: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. Digest of a directory image.
mkdir -p "$work/d/rootfs"
cp -a "$tree/." "$work/d/rootfs/"
size=$(du -sm "$work/d/rootfs" | cut -f1)
files=$(find "$work/d/rootfs" | wc -l)
cat > "$work/d/p.toml" <<'EOF'
[[step]]
name = "probe"
image = "rootfs"
script = "true"
EOF
hash_all() { find "$work/d/rootfs" -type f -print0 | xargs -0 -n 100000 sha256sum >/dev/null; }
hash_all # warm the page cache for both
t0=$(now); hash_all; t1=$(now)
"$grit" validate -m "$work/d/p.toml" >/dev/null; t2=$(now)
echo "digest of a ${size} MB tree, ${files} entries (copy of $tree):"
echo "  floor  sha256sum FILES   $(secs "$t0" "$t1") s"
echo "  grit   validate          $(secs "$t1" "$t2") s"

# 2. Per-task cost of an image root.
if [ -x /bin/busybox ]; then
  mkdir -p "$work/t/rootfs/bin" "$work/t/rootfs/etc"
  cp /bin/busybox "$work/t/rootfs/bin/"
  for a in sh cat wc; do ln -s busybox "$work/t/rootfs/bin/$a"; done
  for kind in host image; do
    line=""
    [ "$kind" = image ] && line='image = "rootfs"'
    cat > "$work/t/$kind.toml" <<EOF
[[step]]
name = "items"
script = 'for i in \$(seq $tasks); do echo \$i > \$OUTPUT_DIR/item_\$i; done'

[[step]]
name = "count"
inputs = ["item_*"]
$line
script = 'wc -c < \$INPUT_FILE > \$OUTPUT_DIR/n_\$GRIT_INPUT_NAME'
EOF
    discard "$work/t/db-$kind"
    t0=$(now)
    "$grit" run -q -m "$work/t/$kind.toml" --db "$work/t/db-$kind" >/dev/null 2>&1
    t1=$(now)
    echo "  $tasks sandboxed map tasks, $kind root: $(secs "$t0" "$t1") s ($(awk -v a="$t0" -v b="$t1" -v n="$tasks" 'BEGIN { printf "%.2f", (b - a) * 1000 / n }') ms per task)"
  done
else
  echo "  (task part skipped: /bin/busybox is missing)"
fi
