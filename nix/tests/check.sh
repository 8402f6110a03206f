#!/usr/bin/env bash
# Offline checks of grit's Nix files, for .ci/run (which installs nix-bin).
#
#   a. `nix-instantiate --parse` on every tracked .nix file;
#   b. `nix flake metadata --no-update-lock-file` (the lock covers flake.nix,
#      without network) and the shape of the locked nixpkgs entry;
#   c. nix/module.nix through shared/tools/nixos-module-eval with --verify on
#      each configs/*.nix, then expect.py on what it generated (bad-*.nix must
#      fail their assertion, exit 2); the flake's own nixosModules.default;
#      the generated grit-<name> admin command, run for real with a fake grit;
#   d. the VM tests' Python testScripts, rendered with stub pkgs, byte-compiled;
#      the server test's nodes evaluated through the harness like c.
#
# c and d need nixpkgs' lib: $NIXPKGS_LIB, else /tmp/nixpkgs-lib/lib, else an
# export of a local nix-community/nixpkgs.lib mirror; without one they are
# skipped with a message. What cannot be checked here at all (building the
# package, full NixOS evaluation, running the VM tests) is listed in docs/nix.md.
#
# Exit status: 0 when everything that ran passed, 1 otherwise.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(git -C "$here" rev-parse --show-toplevel)"
cd "$top" || exit 1
harness="$top/../shared/tools/nixos-module-eval"
export NIX_CONFIG="experimental-features = nix-command flakes
${NIX_CONFIG:-}"

passed=0
failed=0
skipped=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
skip() { echo "SKIP: $*"; skipped=$((skipped + 1)); }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

if ! command -v nix-instantiate > /dev/null; then
  echo "check.sh: nix-instantiate not found. Install Nix first (Debian: apt-get install -y nix-bin)." >&2
  exit 1
fi
echo "== $(nix-instantiate --version)"

# ---- a. syntax -------------------------------------------------------------
mapfile -t nixfiles < <(git ls-files '*.nix')
for f in "${nixfiles[@]}"; do
  if nix-instantiate --parse "$f" > /dev/null 2> "$scratch/parse.err"; then
    pass "parse $f"
  else
    fail "parse $f: $(cat "$scratch/parse.err")"
  fi
done

# ---- b. flake.lock ---------------------------------------------------------
# Offline, metadata succeeds exactly when the lock covers flake.nix's inputs;
# otherwise Nix tries to re-lock over the network and fails.
if nix flake metadata --no-update-lock-file --option substituters '' "path:$top" > "$scratch/meta.out" 2>&1; then
  pass "nix flake metadata --no-update-lock-file: $(grep -o 'github:NixOS/nixpkgs/[0-9a-f]*' "$scratch/meta.out" | head -1)"
else
  fail "nix flake metadata --no-update-lock-file: $(tail -3 "$scratch/meta.out")"
fi
# Nix does not insist on narHash at metadata time, so check the entry's shape.
if python3 - flake.lock <<'PY'; then pass "flake.lock: nixpkgs entry complete (github, rev, narHash, lastModified)"; else fail "flake.lock: nixpkgs entry incomplete"; fi
import json, re, sys
l = json.load(open(sys.argv[1]))
n = l["nodes"][l["nodes"][l["root"]]["inputs"]["nixpkgs"]]
k = n["locked"]
ok = (l["version"] == 7 and k["type"] == "github" and k["owner"] == "NixOS" and k["repo"] == "nixpkgs"
      and re.fullmatch(r"[0-9a-f]{40}", k["rev"]) and re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", k.get("narHash", ""))
      and isinstance(k.get("lastModified"), int) and n["original"].get("ref") == "nixos-unstable")
sys.exit(0 if ok else 1)
PY

# ---- nixpkgs lib for c and d -------------------------------------------------
lib="${NIXPKGS_LIB:-}"
if [ -z "$lib" ] && [ -f /tmp/nixpkgs-lib/lib/default.nix ]; then
  lib=/tmp/nixpkgs-lib/lib
fi
if [ -z "$lib" ]; then
  for mirror in /work/.mirror/*nixpkgs.lib*/repo /work/.mirror/*nixpkgs.lib*; do
    if git -C "$mirror" rev-parse --verify -q HEAD > /dev/null 2>&1; then
      mkdir -p /tmp/nixpkgs-lib
      if git -C "$mirror" archive HEAD | tar -x -C /tmp/nixpkgs-lib && [ -f /tmp/nixpkgs-lib/lib/default.nix ]; then
        lib=/tmp/nixpkgs-lib/lib
        echo "== exported nixpkgs lib from $mirror"
        break
      fi
    fi
  done
fi

if [ -z "$lib" ] || [ ! -f "$lib/default.nix" ]; then
  skip "module and VM-test-script checks: nixpkgs lib not found (set NIXPKGS_LIB to a nixpkgs lib/ directory, e.g. 'git -C <clone of github.com/nix-community/nixpkgs.lib> archive HEAD | tar -x -C /tmp/nixpkgs-lib')"
elif [ ! -x "$harness/eval-module.sh" ]; then
  skip "module checks: harness not found at $harness"
else
  NIXPKGS_LIB="$(cd "$lib" && pwd)"
  export NIXPKGS_LIB
  echo "== nixpkgs lib: $NIXPKGS_LIB"
  eval_module() { "$harness/eval-module.sh" --verify --stub "$here/stubs.nix" "$@"; }

  # ---- c. the module on each configuration --------------------------------
  for config in "$here"/configs/*.nix; do
    name="$(basename "$config" .nix)"
    case "$name" in wrapper | token-*) continue ;; esac  # below, with their scratch root
    out="$scratch/$name"
    eval_module --out "$out" "$top/nix/module.nix" "$config" > "$out.log" 2>&1
    rc=$?
    want=0
    case "$name" in bad-*) want=2 ;; esac
    if [ "$rc" != "$want" ]; then
      fail "module/$name: eval-module.sh exited $rc, expected $want"
      sed 's/^/    /' "$out.log"
    elif ! python3 "$here/expect.py" "$name" "$out/result.json" > "$out.expect" 2>&1; then
      fail "module/$name: $(cat "$out.expect")"
    else
      pass "module/$name (exit $rc; $(grep -c '' < <(ls "$out/units")) units verified; expectations met)"
    fi
  done

  # The flake's nixosModules.default (nix/module.nix + package default).
  out="$scratch/flake-module"
  if eval_module --out "$out" "$here/flake-module.nix" "$here/configs/minimal.nix" > "$out.log" 2>&1 &&
    python3 "$here/expect.py" flake-module "$out/result.json" > "$out.expect" 2>&1; then
    pass "flake nixosModules.default: imports nix/module.nix, package defaults to the flake's grit"
  else
    fail "flake nixosModules.default: $(cat "$out.log" "$out.expect" 2> /dev/null | tail -5)"
  fi

  # ---- c'. the grit-<name> admin command, run against a fake grit ---------
  root="$scratch/root"
  mkdir -p "$root/grit/bin" "$root/coreutils/bin" "$root/util-linux/bin"
  chmod 755 "$scratch" "$root"
  ln -s "$(command -v id)" "$root/coreutils/bin/id"
  # grit-server's ExecReload; any executable will do for systemd-analyze
  ln -s "$(type -P kill || type -P true)" "$root/coreutils/bin/kill"
  ln -s "$(command -v setpriv)" "$root/util-linux/bin/setpriv"
  cat > "$root/grit/bin/grit" <<'SH'
#!/bin/sh
echo "user=$(id -un)"
echo "GRIT_DB=$GRIT_DB"
echo "SECRET=${SECRET-unset}"
echo "FROM_NIX=$FROM_NIX"
for a in "$@"; do echo "arg=$a"; done
SH
  chmod 755 "$root/grit/bin/grit"
  printf '# a comment\n\nSECRET="s3cret value"\n  PLAIN = x\nbad-name=1\n' > "$root/secret.env"
  chmod 400 "$root/secret.env"
  out="$scratch/wrapper"
  if [ "$(id -u)" != 0 ] || ! id nobody > /dev/null 2>&1 || ! getent group nogroup > /dev/null; then
    skip "wrapper run: needs root and the nobody user / nogroup group"
  elif ! GRIT_CHECK_ROOT="$root" eval_module --pkgs "$here/pkgs-wrapper.nix" --out "$out" \
    "$top/nix/module.nix" "$here/configs/wrapper.nix" > "$out.log" 2>&1 ||
    ! python3 "$here/expect.py" wrapper "$out/result.json" > "$out.expect" 2>&1; then
    fail "module/wrapper: $(cat "$out.log" "$out.expect" | tail -5)"
  else
    pass "module/wrapper (evaluates, unit verified)"
    w="$(tail -1 "$out.expect")"
    manifest="$(python3 -c 'import json,sys,shlex; a=shlex.split(json.load(open(sys.argv[1]))["services"]["grit-nightly"]["serviceConfig"]["ExecStart"]); print(a[a.index("--manifest")+1])' "$out/result.json")"
    db=/var/lib/grit/nightly
    if bash -n "$w"; then pass "wrapper: bash -n"; else fail "wrapper: bash -n"; fi
    if command -v shellcheck > /dev/null; then
      if shellcheck -s bash -S warning "$w" > "$scratch/sc.log"; then pass "wrapper: shellcheck"; else fail "wrapper: shellcheck: $(cat "$scratch/sc.log")"; fi
    fi
    # expect_args DESCRIPTION "WRAPPER ARGS" EXPECTED-ARGV...
    expect_args() {
      local what="$1" args="$2"
      shift 2
      local got want
      # shellcheck disable=SC2086
      got="$(bash "$w" $args 2> "$scratch/w.err" | sed -n 's/^arg=//p')"
      want="$(printf '%s\n' "$@")"
      if [ "$got" = "$want" ]; then pass "wrapper: $what"; else fail "wrapper: $what: got [${got//$'\n'/ }], want [${want//$'\n'/ }] $(cat "$scratch/w.err")"; fi
    }
    expect_args "status --json gets --db after the subcommand" "status --json" status --db "$db" --json
    expect_args "run gets --manifest and --db" "run -v" run --manifest "$manifest" --db "$db" -v
    expect_args "validate gets --manifest only" "validate" validate --manifest "$manifest"
    expect_args "log TASK" "log 12" log --db "$db" 12
    expect_args "why HASH" "why abc123" why --db "$db" abc123
    expect_args "resources --json" "resources --json" resources --db "$db" --json
    expect_args "an explicit --db wins" "resources --db=/elsewhere" resources --db=/elsewhere
    expect_args "an explicit -m wins" "run -m /x.toml" run --db "$db" -m /x.toml
    expect_args "options before the subcommand stay first" "-q status" -q status --db "$db"
    expect_args "completions get nothing" "completions bash" completions bash
    expect_args "doctor gets nothing (GRIT_DB is exported)" "doctor" doctor
    expect_args "after -- nothing is parsed" "cat -- --db" cat --db "$db" -- --db
    o="$(bash "$w" status 2>&1)"
    # FROM_NIX holds a literal $HOME: neither Nix nor the wrapper may expand it.
    # shellcheck disable=SC2016
    if grep -qx 'user=nobody' <<< "$o" && grep -qx "GRIT_DB=$db" <<< "$o" &&
      grep -qx 'SECRET=s3cret value' <<< "$o" && grep -qxF 'FROM_NIX=a b $HOME' <<< "$o"; then
      pass "wrapper: as root it reads the root-only environment file, then runs grit as the service user"
    else
      fail "wrapper: as root: $o"
    fi
    if grep -q "invalid name 'bad-name'" <<< "$o"; then pass "wrapper: invalid environment file lines are reported"; else fail "wrapper: invalid env line not reported: $o"; fi
    o="$(setpriv --reuid=nobody --regid=nogroup --clear-groups bash "$w" status 2>&1)"
    if grep -qx 'user=nobody' <<< "$o" && grep -qx 'SECRET=unset' <<< "$o" && grep -q 'cannot read' <<< "$o"; then
      pass "wrapper: as the service user it runs grit directly and warns that it cannot read the environment file"
    else
      fail "wrapper: as the service user: $o"
    fi
    if id daemon > /dev/null 2>&1; then
      # A member of the pipeline's group reads the store as itself; it may not run.
      o="$(setpriv --reuid=daemon --regid=daemon --groups=nogroup bash "$w" status 2>&1)"
      if grep -qx 'user=daemon' <<< "$o" && grep -qx 'arg=status' <<< "$o"; then
        pass "wrapper: a member of the pipeline's group runs read-only subcommands as itself"
      else
        fail "wrapper: a group member's status: $o"
      fi
      o="$(setpriv --reuid=daemon --regid=daemon --groups=nogroup bash "$w" run 2>&1)"
      if ! grep -q '^user=daemon' <<< "$o"; then
        pass "wrapper: a member of the pipeline's group does not run the pipeline as itself"
      else
        fail "wrapper: a group member ran grit run as itself: $o"
      fi
      o="$(setpriv --reuid=daemon --regid=daemon --clear-groups bash "$w" status 2>&1)"
      rc=$?
      if [ -x /run/wrappers/bin/sudo ]; then
        skip "wrapper: other users (this host has /run/wrappers/bin/sudo)"
      elif [ "$rc" = 1 ] && grep -q 'run this as root or as nobody' <<< "$o" && ! grep -q '^user=' <<< "$o"; then
        pass "wrapper: another user without sudo is refused with a message"
      else
        fail "wrapper: another user: rc=$rc $o"
      fi
    fi
  fi

  # ---- c''. the grit-token command, run against the same fake grit ---------
  if [ "$(id -u)" != 0 ] || ! id nobody > /dev/null 2>&1 || ! getent group nogroup > /dev/null || ! id daemon > /dev/null 2>&1; then
    skip "grit-token run: needs root, the nobody and daemon users and the nogroup group"
  else
    for variant in default custom; do
      out="$scratch/token-$variant"
      if ! GRIT_CHECK_ROOT="$root" eval_module --pkgs "$here/pkgs-wrapper.nix" --out "$out" \
        "$top/nix/module.nix" "$here/configs/token-$variant.nix" > "$out.log" 2>&1 ||
        ! python3 "$here/expect.py" "token-$variant" "$out/result.json" > "$out.expect" 2>&1; then
        fail "module/token-$variant: $(cat "$out.log" "$out.expect" | tail -5)"
        continue
      fi
      pass "module/token-$variant (evaluates, units verified)"
      t="$(tail -2 "$out.expect" | head -1)"
      conf="$(tail -1 "$out.expect")"
      if bash -n "$t"; then pass "grit-token ($variant): bash -n"; else fail "grit-token ($variant): bash -n"; fi
      if command -v shellcheck > /dev/null; then
        if shellcheck -s bash -S warning "$t" > "$scratch/sc.log"; then pass "grit-token ($variant): shellcheck"; else fail "grit-token ($variant): shellcheck: $(cat "$scratch/sc.log")"; fi
      fi
      # run_token AS-USER ARGS...: the fake grit's output (user=, arg= lines), then rc=N
      run_token() {
        local who="$1"
        shift
        if [ "$who" = root ]; then
          bash "$t" "$@" 2>&1
        else
          setpriv --reuid="$who" --regid=nogroup --clear-groups bash "$t" "$@" 2>&1
        fi
        echo "rc=$?"
      }
      got() { grep -v '^GRIT_DB=\|^SECRET=\|^FROM_NIX=' <<< "$1" | paste -sd' ' -; }
      if [ "$variant" = default ]; then
        want="user=nobody arg=token arg=--config arg=$conf arg=--role arg=operator rc=0"
        o="$(got "$(run_token root --role operator)")"
        if [ "$o" = "$want" ]; then pass "grit-token: root mints as the server user, with the server's config"; else fail "grit-token as root: got [$o], want [$want]"; fi
        o="$(got "$(run_token nobody --role operator)")"
        if [ "$o" = "$want" ]; then pass "grit-token: the server user mints directly"; else fail "grit-token as the server user: got [$o], want [$want]"; fi
        o="$(got "$(run_token daemon --role operator)")"
        if [ -x /run/wrappers/bin/sudo ]; then
          skip "grit-token: other users (this host has /run/wrappers/bin/sudo)"
        elif grep -q 'run this as root or as nobody' <<< "$o" && grep -q 'rc=1$' <<< "$o" && ! grep -q 'user=' <<< "$o"; then
          pass "grit-token: another user without sudo is refused with a message"
        else
          fail "grit-token as another user: $o"
        fi
      else
        want="user=root arg=token arg=--token-secret-file arg=/run/secrets/grit-token-secret arg=--role arg=viewer arg=--ttl arg=1h rc=0"
        o="$(got "$(run_token root --role viewer --ttl 1h)")"
        if [ "$o" = "$want" ]; then pass "grit-token: with the admin's secret file, root mints as root (the file may be root-only)"; else fail "grit-token (custom secret) as root: got [$o], want [$want]"; fi
        o="$(got "$(run_token nobody --role viewer)")"
        if [ -x /run/wrappers/bin/sudo ]; then
          skip "grit-token: the server user with a custom secret (this host has sudo)"
        elif grep -q 'run this as root' <<< "$o" && ! grep -q 'or as nobody' <<< "$o" && grep -q 'rc=1$' <<< "$o" && ! grep -q 'user=' <<< "$o"; then
          pass "grit-token: with the admin's secret file, even the server user goes through root"
        else
          fail "grit-token (custom secret) as the server user: $o"
        fi
      fi
    done
  fi

  # ---- d. VM test scripts ---------------------------------------------------
  for t in nixos-tests/*.nix; do
    name="$(basename "$t" .nix)"
    if nix-instantiate --eval --strict --json --read-write-mode "$here/vm-test-script.nix" \
      --argstr libPath "$NIXPKGS_LIB" --argstr harness "$harness" --argstr file "$top/$t" \
      > "$scratch/vm-$name.json" 2> "$scratch/vm-$name.err" &&
      python3 - "$scratch/vm-$name.json" "$name" <<'PY' > "$scratch/vm-$name.py.log" 2>&1; then
import json, sys
r = json.load(open(sys.argv[1]))
assert r["name"] == "grit-" + sys.argv[2], f"test name {r['name']!r} should be grit-{sys.argv[2]}"
assert r["importsModule"], "the node does not import self.nixosModules.default"
compile(r["testScript"], f"nixos-tests/{sys.argv[2]}.nix:testScript", "exec")
PY
      pass "vm-test $t: evaluates with stub pkgs, imports the module, testScript is valid Python"
    else
      fail "vm-test $t: $(cat "$scratch/vm-$name.err" "$scratch/vm-$name.py.log" 2> /dev/null | tail -5)"
    fi
  done

  # The nodes of VM tests whose settings need no NixOS options beyond the
  # stubs: the module evaluated with what the node deploys, units verified,
  # then expect.py vm-TEST-NODE.
  for tn in server:machine server:sock; do
    t="${tn%%:*}"
    node="${tn#*:}"
    out="$scratch/vm-$t-$node"
    if GRIT_VM_TEST="$top/nixos-tests/$t.nix" GRIT_VM_NODE="$node" GRIT_HARNESS="$harness" \
      eval_module --out "$out" "$top/nix/module.nix" "$here/vm-node.nix" > "$out.log" 2>&1 &&
      python3 "$here/expect.py" "vm-$t-$node" "$out/result.json" > "$out.expect" 2>&1; then
      pass "vm-test nixos-tests/$t.nix node $node: the module evaluates with its settings, units verified, expectations met"
    else
      fail "vm-test nixos-tests/$t.nix node $node: $(cat "$out.log" "$out.expect" 2> /dev/null | tail -8)"
    fi
  done
fi

echo "== check.sh: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
