# Sourced by the benchmarks: `discard PATH...` moves finished runs' files into "$work/trash"
# (`work` must be set and on the same filesystem), to be deleted with "$work" at exit.
#
# Why not `rm -rf` between timed runs: on ext4 without a journal (these machines), the inode
# allocator skips every inode freed in the last minutes (up to six) and reads each one's deletion
# time on the way, so every file created after a large deletion pays for all of them. Measured
# here: about 15-20 us per file creation normally, 128-579 us in the first 4,000 creations after
# deleting 20,000 files (BENCHMARKS.md, issue 16, seventh pass). A rename frees no inode. For the
# same reason, do not start a benchmark within about 6 minutes of deleting a large tree.
discard() {
  local path
  mkdir -p "$work/trash"
  for path in "$@"; do
    [ -e "$path" ] && mv "$path" "$(mktemp -u "$work/trash/XXXXXXXX")"
  done
  return 0
}
