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


def t_slurm(r):
    svc, argv = run_unit(r, "cluster", db="/shared/grit/cluster")
    check(flag(argv, "--executor") == "slurm", f"--executor slurm expected: {argv}")
    check(svc["environment"].get("SLURM_CONF") == "/etc/slurm/slurm.conf",
          f"SLURM_CONF on the unit: {svc['environment']}")
    _, text = manifest_text(argv)
    check(text is not None, "the rendered TOML is on disk")
    import tomllib
    ex = tomllib.loads(text).get("executor")
    check(ex == {"kind": "slurm", "partition": "batch", "time": "2h", "max_jobs": 50,
                 "group_target": "1m", "sbatch_args": ["--qos=short"]},
          f"[executor] of the generated manifest: {ex}")


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


# ---- services.grit.server -----------------------------------------------------

SERVER_CONFIG = "/etc/grit/server.toml"


def server_unit(r, bind_cap=False):
    """grit-server.service: command, restart policy, hardening; returns (svc, serviceConfig, config)."""
    import tomllib
    svcs = r["services"]
    check("grit-server" in svcs, f"no systemd.services.grit-server (have {sorted(svcs)})")
    svc = svcs["grit-server"]
    sc = svc["serviceConfig"]
    argv = exec_argv(svc)
    check(STORE.match(argv[0]) and argv[0].endswith("/bin/grit"), f"ExecStart binary {argv[0]}")
    check(argv[1:] == ["serve", "--config", SERVER_CONFIG], f"ExecStart must be `grit serve --config {SERVER_CONFIG}`: {argv}")
    check(sc["Type"] == "exec", "Type=exec expected")
    check(sc["Restart"] == "on-failure", "Restart=on-failure expected")
    check(sc["KillMode"] == "mixed", "KillMode=mixed: SIGTERM to grit serve only, which cancels its tasks")
    check(sc["UMask"] == "0027", "UMask=0027 expected")
    check(sc.get("ExecReload", "").endswith("/bin/kill -HUP $MAINPID"), f"ExecReload sends SIGHUP: {sc.get('ExecReload')}")
    check(svc["wantedBy"] == ["multi-user.target"], "the server starts at boot (schedules, resuming runs)")
    check(sc["User"] == "grit" and sc["Group"] == "grit", f"User/Group {sc['User']}/{sc['Group']}")
    # the hardening the sandbox allows
    for key, want in (("ProtectSystem", "strict"), ("ProtectHome", "read-only"), ("PrivateTmp", True),
                      ("ProtectControlGroups", True), ("DevicePolicy", "closed"), ("NoNewPrivileges", True),
                      ("SystemCallArchitectures", "native"), ("RestrictRealtime", True),
                      ("LockPersonality", True)):
        check(sc.get(key) == want, f"{key}={want} expected, got {sc.get(key)!r}")
    check("/dev/fuse rw" in sc.get("DeviceAllow", []), "DeviceAllow must keep /dev/fuse")
    caps = "CAP_NET_BIND_SERVICE" if bind_cap else ""
    check(sc.get("CapabilityBoundingSet") == caps, f"CapabilityBoundingSet={caps!r} expected, got {sc.get('CapabilityBoundingSet')!r}")
    if bind_cap:
        check(sc.get("AmbientCapabilities") == "CAP_NET_BIND_SERVICE", "a port below 1024 needs CAP_NET_BIND_SERVICE")
    else:
        check("AmbientCapabilities" not in sc, f"no ambient capabilities expected: {sc.get('AmbientCapabilities')}")
    # settings that would break the task sandbox or the store (see module.nix)
    for bad in ("RestrictNamespaces", "PrivateDevices", "SystemCallFilter", "ProtectKernelTunables",
                "ProtectProc", "ProcSubset", "PrivateUsers", "ProtectHostname", "RestrictAddressFamilies",
                "MemoryDenyWriteExecute", "PrivateNetwork", "DynamicUser", "RestrictSUIDSGID",
                "ProtectKernelLogs"):
        check(bad not in sc, f"{bad} must not be set on grit-server (breaks namespaces, /proc, FUSE or setgid stores)")
    check("grit-server" not in r["timers"], "the server has no timer")
    check(SERVER_CONFIG.removeprefix("/etc/") in r["etc"], f"{SERVER_CONFIG} expected in environment.etc")
    source = r["etc"][SERVER_CONFIG.removeprefix("/etc/")]["source"]
    check(STORE.match(source) and source.endswith("-grit-server.toml"), f"config rendered to the store: {source}")
    check(source in svc.get("reloadTriggers", []), "a new config alone reloads the server (reloadTriggers)")
    config = tomllib.loads(open(source).read())
    token = [p for p in r["systemPackages"] if re.search(r"-grit-token(-script)?$", p)]
    check(len(token) == 1, f"one grit-token command in systemPackages expected: {r['systemPackages']}")
    return svc, sc, config


def firewall_ports(r):
    return json.loads(r["etc"]["harness/firewall.json"]["text"])["allowedTCPPorts"]


def only_assertions(r, *wanted):
    """Exactly these assertions failed: each substring matches one message and vice versa."""
    failed = r["assertionsFailed"]
    for w in wanted:
        check(any(w in a for a in failed), f"an assertion mentioning {w!r} expected: {failed}")
    for a in failed:
        check(any(w in a for w in wanted), f"unexpected failed assertion: {a}")
    check(len(failed) == len(wanted), f"{len(wanted)} failed assertions expected: {failed}")


def t_server_minimal(r):
    svc, sc, config = server_unit(r)
    manifest = config["pipelines"]["nightly"].pop("manifest")
    check(STORE.match(manifest) and manifest.endswith("-nightly.toml"), f"the manifest path literal is copied to the store: {manifest}")
    check(config == {
        "listen": "127.0.0.1:9009",
        "token_secret_file": "/var/lib/grit-server/token-secret",
        "shutdown_timeout": "30s",
        "pipelines": {"nightly": {"db": "/var/lib/grit/nightly", "group": "grit"}},
    }, f"server config {config}")
    check(sc["StateDirectory"] == ["grit-server", "grit/nightly"] and sc["StateDirectoryMode"] == "2750",
          f"the store and the token secret live in StateDirectory: {sc.get('StateDirectory')}")
    check(sc["TimeoutStopSec"] == "30s 30s", f"TimeoutStopSec = shutdown_timeout + 30s: {sc['TimeoutStopSec']}")
    for absent in ("ReadWritePaths", "LoadCredential", "RuntimeDirectory", "EnvironmentFile", "SupplementaryGroups"):
        check(absent not in sc, f"{absent} not expected: {sc.get(absent)}")
    check(svc["environment"] == {}, f"no environment: {svc['environment']}")
    check(any(str(p).endswith("-bash-5.2") for p in svc["path"]), "bash on the server's PATH (grit's default shell)")
    check(svc["unitConfig"]["RequiresMountsFor"] == ["/var/lib/grit/nightly"], "RequiresMountsFor the store")
    check("grit-server.socket" not in svc.get("requires", []), "no socket without socketActivation")
    check(set(r["services"]) == {"grit-server"}, f"a served pipeline gets no oneshot unit: {sorted(r['services'])}")
    check(r["timers"] == {} and r["sockets"] == {}, f"no timers or sockets: {r['timers']} {r['sockets']}")
    wrapper(r, "nightly")
    u = r["users"].get("grit")
    check(u and u["isSystemUser"] and u["group"] == "grit", "the module creates the grit system user")
    check("grit" in r["groups"], "the module creates the grit group")
    check(firewall_ports(r) == [], "no port opened by default")
    check(r["tmpfiles"]["rules"] == [], f"no tmpfiles rules: {r['tmpfiles']['rules']}")
    check(not r["warnings"], f"no warnings expected: {r['warnings']}")


def t_server_full(r):
    svc, sc, config = server_unit(r, bind_cap=True)
    check(config["listen"] == "0.0.0.0:443", f"listen {config['listen']}")
    check(config["token_secret_file"] == "/run/credentials/grit-server.service/token-secret",
          f"the admin's secret reaches the server as a credential: {config['token_secret_file']}")
    check(config["shutdown_timeout"] == "5m" and config["request_timeout"] == "1m", f"settings {config}")
    check(set(config["pipelines"]) == {"etl", "report"}, f"only the listed pipelines are served: {sorted(config['pipelines'])}")
    etl = dict(config["pipelines"]["etl"])
    check(etl.pop("manifest").endswith("-nightly.toml"), "etl manifest")
    check(etl == {
        "db": "/var/lib/grit/etl", "group": "analysts", "jobs": 2, "queue_limit": 10,
        "queue_strategy": "replace", "start_delay": "5s", "schedule": ["*/15 * * * *", "every 10m"],
        "watch": ["/srv/incoming"], "keep_runs": 100, "keep_days": 30, "params": {"region": "eu"},
    }, f"etl entry {etl}")
    report = dict(config["pipelines"]["report"])
    manifest = report.pop("manifest")
    check(manifest.endswith("-grit-report.toml"), f"settings rendered as grit-report.toml: {manifest}")
    import tomllib
    check(tomllib.loads(open(manifest).read())["pipeline"]["name"] == "report", "the rendered manifest is the pipeline's")
    check(report == {"db": "/srv/grit/report", "group": "grit", "queue_limit": 0},
          f"report entry ({{ }}/null keys dropped, a 0 kept): {report}")
    check(sc["LoadCredential"] == "token-secret:/run/secrets/grit-token-secret", f"LoadCredential {sc.get('LoadCredential')}")
    # etl's group is not the server's, so its store is no StateDirectory (systemd would re-chown it)
    check("StateDirectory" not in sc, f"no StateDirectory: {sc.get('StateDirectory')}")
    check(sc["ReadWritePaths"] == ["/var/lib/grit/etl", "/srv/grit/report", "-/srv/exports"],
          f"ReadWritePaths {sc.get('ReadWritePaths')}")
    check(sorted(r["tmpfiles"]["rules"]) == ["d /srv/grit/report 2750 grit grit - -", "d /var/lib/grit/etl 2750 grit analysts - -"],
          f"tmpfiles {r['tmpfiles']['rules']}")
    check(sc["SupplementaryGroups"] == ["analysts"], f"SupplementaryGroups {sc.get('SupplementaryGroups')}")
    check(sc["EnvironmentFile"] == ["/run/secrets/etl.env"], f"EnvironmentFile {sc.get('EnvironmentFile')}")
    check(svc["environment"] == {"TZ": "UTC"}, f"environment {svc['environment']}")
    paths = [str(p) for p in svc["path"]]
    check(any("-curl-" in p for p in paths) and any("-gawk-" in p for p in paths), f"the pipelines' path: {paths}")
    check(sc["TimeoutStopSec"] == "5m 30s", f"TimeoutStopSec {sc['TimeoutStopSec']}")
    check(svc["unitConfig"]["RequiresMountsFor"] == ["/var/lib/grit/etl", "/srv/grit/report"], "RequiresMountsFor both stores")
    check(set(r["services"]) == {"grit-server", "grit-nightly"}, f"services {sorted(r['services'])}")
    check(set(r["timers"]) == {"grit-nightly"}, f"the unserved pipeline keeps its timer: {sorted(r['timers'])}")
    for name in ("etl", "report", "nightly"):
        wrapper(r, name)
    check(firewall_ports(r) == [443], f"openFirewall opens the TCP port: {firewall_ports(r)}")
    check(r["warnings"] == ["services.grit.pipelines.nightly.serverSettings is set, but nightly is not in "
                            "services.grit.server.pipelines, so it is ignored."], f"warnings {r['warnings']}")


def t_server_socket(r):
    svc, sc, config = server_unit(r)
    check(config["listen"] == "unix:/run/grit-server/api.sock", f"listen {config['listen']}")
    check(set(r["sockets"]) == {"grit-server"}, f"grit-server.socket expected: {sorted(r['sockets'])}")
    so = r["sockets"]["grit-server"]
    check(so["wantedBy"] == ["sockets.target"], "the socket is wanted by sockets.target")
    check(so["listenStreams"] == ["/run/grit-server/api.sock"], f"ListenStream {so['listenStreams']}")
    check(so["socketConfig"] == {"SocketUser": "grit", "SocketGroup": "grit", "SocketMode": "0660", "RemoveOnStop": True},
          f"socketConfig {so['socketConfig']}")
    check(svc["requires"] == ["grit-server.socket"] and "grit-server.socket" in svc["after"],
          "the service requires and follows its socket")
    check("RuntimeDirectory" not in sc, "the socket unit owns the socket's directory, not the service")
    check(firewall_ports(r) == [], "a unix socket opens no port")


def t_server_unix(r):
    svc, sc, config = server_unit(r)
    check(config["listen"] == "unix:/run/grit-api/api.sock", f"listen {config['listen']}")
    check(sc.get("RuntimeDirectory") == "grit-api" and sc.get("RuntimeDirectoryMode") == "0750",
          f"the socket's directory is the RuntimeDirectory: {sc.get('RuntimeDirectory')}")
    check(r["sockets"] == {}, "no socket unit without socketActivation")


def t_server_tcp_socket(r):
    svc, sc, config = server_unit(r, bind_cap=False)  # systemd binds port 80: no capability
    so = r["sockets"]["grit-server"]
    check(so["listenStreams"] == ["[::]:80"] and so["socketConfig"] == {}, f"socket {so}")
    check(firewall_ports(r) == [80], f"firewall {firewall_ports(r)}")


def t_bad_slurm_file(r):
    only_assertions(r, "pipelines.filed.executor.slurm: job settings go into a generated manifest only")


def t_bad_server_empty(r):
    only_assertions(r, "serves no pipeline")


def t_bad_server_unknown(r):
    only_assertions(r, '"nigthly" is not an enabled pipeline', '"off" is not an enabled pipeline')


def t_bad_server_runargs(r):
    only_assertions(r, "pipelines.nightly is served by services.grit.server, which runs it; startAt",
                    "pipelines.hourly is served by services.grit.server, which runs it; startAt",
                    "pipelines.hourly.extraArgs are arguments of `grit run`")


def t_bad_server_user(r):
    only_assertions(r, 'pipelines.etl.user = "etl", but the server runs every pipeline')


def t_bad_server_root(r):
    only_assertions(r, 'server.user = "root"')


def t_bad_server_listen(r):
    only_assertions(r, 'listen = "9009": expected HOST:PORT')


def t_bad_server_port(r):
    only_assertions(r, 'listen = "0.0.0.0:70000": expected HOST:PORT (port 1-65535')


def t_bad_server_firewall_unix(r):
    only_assertions(r, "is a unix socket: there is no TCP port to open")


def t_bad_server_firewall_loopback(r):
    only_assertions(r, 'listen = "127.0.0.1:9009" is a loopback address')


def t_bad_server_unix_path(r):
    only_assertions(r, "without socketActivation the socket must lie in a directory under /run")


def t_bad_server_socket_name(r):
    only_assertions(r, "with socketActivation, systemd's ListenStream= needs an IP address")


def t_bad_server_secret(r):
    only_assertions(r, "must be an absolute path outside the Nix store")


def t_bad_server_keys(r):
    only_assertions(r, "server.settings: listen cannot be set here",
                    "nightly.serverSettings: db, jobs cannot be set here")


def t_bad_server_shared(r):
    only_assertions(r, "served pipelines share a store (dataDir /var/lib/grit/shared)",
                    "set TZ to different values")


def token_command(r):
    # grit is check.sh's fake here; check.sh runs the command itself
    pk = [p for p in r["systemPackages"] if p.endswith("-grit-token")]
    check(len(pk) == 1 and os.path.isfile(pk[0]), f"grit-token file: {r['systemPackages']}")
    return pk[0]


def t_token_default(r):
    check(r["services"]["grit-server"]["serviceConfig"]["User"] == "nobody", "server user")
    print(token_command(r))
    print(r["etc"]["grit/server.toml"]["source"])


def t_token_custom(r):
    t_token_default(r)


def t_vm_server_machine(r):
    """nixos-tests/server.nix, node machine: what its testScript relies on."""
    svc, sc, config = server_unit(r)
    check(config["listen"] == "0.0.0.0:9009" and config["shutdown_timeout"] == "2m", f"config {config}")
    check(set(config["pipelines"]) == {"hello", "slow"}, f"served {sorted(config['pipelines'])}")
    check(config["pipelines"]["hello"]["params"] == {"who": "nixos"}, "serverSettings.params reach the config")
    check(set(r["services"]) == {"grit-server", "grit-manual"}, f"services {sorted(r['services'])}")
    check(sc["StateDirectory"] == ["grit-server", "grit/hello", "grit/slow"], f"StateDirectory {sc.get('StateDirectory')}")
    check(firewall_ports(r) == [9009], f"firewall {firewall_ports(r)}")
    check(not r["warnings"], f"warnings {r['warnings']}")


def t_vm_server_sock(r):
    """nixos-tests/server.nix, node sock."""
    t_server_socket(r)
    check(r["sockets"]["grit-server"]["listenStreams"] == ["/run/grit-server/api.sock"], "socket path")


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
