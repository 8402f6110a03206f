#!/usr/bin/env python3
"""What nix/module.nix must generate for each configuration in configs/.

usage: expect.py CONFIG_NAME RESULT_JSON  (RESULT_JSON: eval-module.sh --out DIR/result.json)

The harness proves the module evaluates and its units pass systemd-analyze;
this file checks that the units say what the module promises (ExecStart
flags, store directory, timer, user, hardening). Exit 1 on the first
mismatch, with a message.
"""
import json
import os
import re
import shlex
import sys

STORE = re.compile(r"^/nix/store/[0-9a-z]{32}-")


def fail(msg):
    print(f"expect: FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def exec_argv(svc):
    """ExecStart split the way systemd does for this quoting (C-style strings)."""
    line = svc["serviceConfig"]["ExecStart"]
    check(isinstance(line, str), f"ExecStart is not one command line: {line!r}")
    argv = shlex.split(line)
    # the module doubles $ and % for systemd; undo for comparison
    return [a.replace("$$", "$").replace("%%", "%") for a in argv]


def flag(argv, name):
    check(argv.count(name) == 1, f"{name} appears {argv.count(name)} times in {argv}")
    return argv[argv.index(name) + 1]


def hardening(svc):
    sc = svc["serviceConfig"]
    check(sc["Type"] == "oneshot", "Type must be oneshot")
    check(sc.get("ProtectSystem") == "strict", "ProtectSystem=strict expected")
    check(sc.get("PrivateTmp") is True, "PrivateTmp expected")
    check("/dev/fuse rw" in sc.get("DeviceAllow", []), "DeviceAllow must keep /dev/fuse")
    check(sc.get("DevicePolicy") == "closed", "DevicePolicy=closed expected")
    # settings that would break the task sandbox (see module.nix)
    for bad in ("RestrictNamespaces", "PrivateDevices", "NoNewPrivileges", "SystemCallFilter",
                "ProtectKernelTunables", "ProtectProc", "ProcSubset", "PrivateUsers",
                "ProtectHostname", "RestrictAddressFamilies", "CapabilityBoundingSet",
                "MemoryDenyWriteExecute", "LockPersonality", "PrivateNetwork", "DynamicUser"):
        check(bad not in sc, f"{bad} must not be set on the unit (breaks namespaces/FUSE)")
    check(svc.get("restartIfChanged") is False, "restartIfChanged must be false")


def run_unit(r, name, db=None, user="grit", group="grit", store_binary=True):
    svcs = r["services"]
    check(f"grit-{name}" in svcs, f"no systemd.services.grit-{name} (have {sorted(svcs)})")
    svc = svcs[f"grit-{name}"]
    hardening(svc)
    argv = exec_argv(svc)
    check((STORE.match(argv[0]) or not store_binary) and argv[0].endswith("/bin/grit"),
          f"ExecStart binary {argv[0]}")
    check(argv[1] == "run", f"ExecStart must run `grit run`: {argv}")
    check(flag(argv, "--log-format") == "journald", "--log-format journald expected")
    db = db or f"/var/lib/grit/{name}"
    check(flag(argv, "--db") == db, f"--db {db} expected: {argv}")
    sc = svc["serviceConfig"]
    check(sc["User"] == user and sc["Group"] == group, f"User/Group {sc['User']}/{sc['Group']}")
    # The store is created readable by the pipeline's group (grit run --group).
    check(flag(argv, "--group") == group, f"--group {group} expected: {argv}")
    return svc, argv


def manifest_text(argv):
    path = flag(argv, "--manifest")
    check(STORE.match(path) or path.startswith("/"), f"manifest path {path}")
    return path, (open(path).read() if os.path.exists(path) else None)


def timer(r, name):
    check(f"grit-{name}" in r["timers"], f"no timer grit-{name}")
    t = r["timers"][f"grit-{name}"]
    check(t["wantedBy"] == ["timers.target"], "timer must be wanted by timers.target")
    return t["timerConfig"]


def wrapper(r, name):
    pk = [p for p in r["systemPackages"] if re.search(rf"-grit-{re.escape(name)}(-script)?$", p)]
    check(len(pk) == 1, f"one grit-{name} wrapper in systemPackages expected: {r['systemPackages']}")


def t_minimal(r):
    svc, argv = run_unit(r, "nightly")
    path, text = manifest_text(argv)
    check(path.endswith("-nightly.toml"), "the manifest path literal is copied to the store")
    check(text is not None and '[pipeline]' in text and 'name = "nightly"' in text,
          "the store copy is the manifest from nix/tests/manifests")
    check("--parallel" not in argv and argv[-2:] == ["--group", "grit"], f"no extra arguments expected: {argv}")
    sc = svc["serviceConfig"]
    check(sc["StateDirectory"] == "grit/nightly" and sc["StateDirectoryMode"] == "2750", "StateDirectory")
    check("ReadWritePaths" not in sc, "no ReadWritePaths for a store under /var/lib")
    check("EnvironmentFile" not in sc, "no EnvironmentFile by default")
    tc = timer(r, "nightly")
    check(tc["OnCalendar"] == ["daily"] and tc["Persistent"] is True, f"timer {tc}")
    u = r["users"].get("grit")
    check(u and u["isSystemUser"] and u["group"] == "grit", "the module creates the grit system user")
    check("grit" in r["groups"], "the module creates the grit group")
    wrapper(r, "nightly")
    check(not r["warnings"], f"no warnings expected: {r['warnings']}")


def t_settings(r):
    svc, argv = run_unit(r, "report")
    path, text = manifest_text(argv)
    check(path.endswith("-grit-report.toml"), f"settings rendered as grit-report.toml: {path}")
    check(text is not None, "the rendered TOML is on disk")
    import tomllib
    m = tomllib.loads(text)
    check(m["pipeline"]["name"] == "report", "pipeline.name defaults to the attribute name")
    check("retries" not in m["pipeline"], "null pipeline.retries removed")
    check([s["name"] for s in m["step"]] == ["numbers", "sum"], f"steps {m['step']}")
    check("timeout" not in m["step"][1], "null step timeout removed")
    check(m["step"][0].get("env", {}) == {}, "null env value removed")
    check(m["step"][1]["inputs"] == ["numbers"], "inputs kept")
    sc = svc["serviceConfig"]
    check(sc.get("ReadWritePaths") == ["-/srv/exports", "-/srv/cache"],
          f"read_write paths of the settings become ReadWritePaths: {sc.get('ReadWritePaths')}")
    check(svc["environment"] == {"GREETING": "hello from nix"}, f"environment {svc['environment']}")
    paths = [str(p) for p in svc["path"]]
    check(any(p.endswith("-bash-5.2") for p in paths), "bash (for sh -ec) on the unit's PATH")
    check(any("-gawk-" in p for p in paths), "pipeline path on the unit's PATH")
    tc = timer(r, "report")
    check(tc["OnCalendar"] == ["hourly"], "startAt string")
    wrapper(r, "report")


def t_custom_user(r):
    svc, argv = run_unit(r, "etl", db="/srv/grit/etl", user="etl", group="etl")
    sc = svc["serviceConfig"]
    check("StateDirectory" not in sc, "no StateDirectory outside /var/lib")
    check(sc["ReadWritePaths"] == ["/srv/grit/etl"], f"ReadWritePaths {sc.get('ReadWritePaths')}")
    check(svc["unitConfig"]["RequiresMountsFor"] == ["/srv/grit/etl"], "RequiresMountsFor the store")
    check(r["tmpfiles"]["rules"] == ["d /srv/grit/etl 2750 etl etl - -"], f"tmpfiles {r['tmpfiles']['rules']}")
    check("grit" not in r["users"] and "grit" not in r["groups"],
          "no grit user/group when no pipeline uses them")
    tc = timer(r, "etl")
    check(tc["OnCalendar"] == ["Mon..Fri *-*-* 06:00:00", "Sat *-*-* 12:00:00"], f"OnCalendar list {tc}")
    check(tc["Persistent"] is True, "Persistent defaults to true")
    wrapper(r, "etl")


def t_no_timer(r):
    svc, argv = run_unit(r, "manual")
    check(flag(argv, "--manifest") == "/etc/grit/manual.toml", "a string manifest path is used in place")
    check(r["timers"] == {}, f"startAt = [] means no timer: {r['timers']}")
    check(set(r["services"]) == {"grit-manual"}, f"disabled pipeline generates nothing: {sorted(r['services'])}")
    wrapper(r, "manual")
    check(not any("grit-off" in p for p in r["systemPackages"]), "no wrapper for a disabled pipeline")


def t_env_args(r):
    svc, argv = run_unit(r, "ingest")
    check(flag(argv, "--parallel") == "4", "parallel = 4 → --parallel 4")
    check(argv[-3:] == ["--max-tasks", "500", "--json"], f"extraArgs appended last: {argv}")
    check(svc["serviceConfig"]["EnvironmentFile"] == "/run/secrets/ingest.env", "EnvironmentFile")
    tc = timer(r, "ingest")
    check(tc == {"OnCalendar": ["*:0/15"], "Persistent": False, "RandomizedDelaySec": "2m"},
          f"timerConfig overrides Persistent and adds keys: {tc}")


def t_userns_off(r):
    run_unit(r, "nightly")
    check(len(r["warnings"]) == 1 and "allowUserNamespaces" in r["warnings"][0],
          f"a warning about user namespaces expected: {r['warnings']}")


def t_wrapper(r):
    # grit is check.sh's fake in a scratch directory here
    run_unit(r, "nightly", user="nobody", group="nogroup", store_binary=False)
    # check.sh runs the wrapper itself; only make sure there is one file
    pk = [p for p in r["systemPackages"] if p.endswith("-grit-nightly")]
    check(len(pk) == 1 and os.path.isfile(pk[0]), f"wrapper file: {r['systemPackages']}")
    print(pk[0])


def t_flake_module(r):
    svc, argv = run_unit(r, "nightly")
    check(argv[0] == "/nix/store/00000000000000000000000000000000-grit-from-flake-0.1.0/bin/grit",
          f"the flake's module defaults the package to the flake's own grit: {argv[0]}")


def t_bad_both(r):
    check(any("both are set" in a for a in r["assertionsFailed"]), f"assertions: {r['assertionsFailed']}")


def t_bad_neither(r):
    check(any("neither is set" in a for a in r["assertionsFailed"]), f"assertions: {r['assertionsFailed']}")


def t_bad_name(r):
    check(any("may only contain" in a for a in r["assertionsFailed"]), f"assertions: {r['assertionsFailed']}")


def main():
    name, result = sys.argv[1], sys.argv[2]
    r = json.load(open(result))
    fn = globals().get("t_" + name.replace("-", "_"))
    if fn is None:
        fail(f"no expectations for configuration {name}")
    if not name.startswith("bad-"):
        check(not r["assertionsFailed"], f"unexpected failed assertions: {r['assertionsFailed']}")
    fn(r)


if __name__ == "__main__":
    main()
