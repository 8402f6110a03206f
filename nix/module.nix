# NixOS module: `services.grit.pipelines.<name>`.
#
# Each enabled pipeline becomes
#   * `grit-<name>.service`: a oneshot unit running `grit run` on the pipeline's
#     manifest and store, logging to journald with grit's structured fields;
#   * `grit-<name>.timer`: when `startAt` is not empty;
#   * `grit-<name>`: an admin command with the pipeline's `--db` (and
#     `--manifest` for `run`/`validate`) preset, run as the service user.
#
# Shaped like nixpkgs' services.restic.backups.<name> (wrapper command,
# environmentFile, timerConfig) and services.borgbackup.jobs.<name>
# (startAt with `[ ]` = no timer, user/group, tmpfiles for custom dirs).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types literalExpression;

  cfg = config.services.grit;

  tomlFormat = pkgs.formats.toml { };
  # `settings` is typed with the JSON value type because, unlike TOML's, it
  # admits null: a key set to null is dropped before the TOML is rendered,
  # which is how a key is switched off conditionally.
  jsonFormat = pkgs.formats.json { };

  enabledPipelines = lib.filterAttrs (_: p: p.enable) cfg.pipelines;

  # Drops nulls at every depth (attribute values and list elements).
  removeNulls =
    v:
    if lib.isAttrs v && !lib.isDerivation v then
      lib.mapAttrs (_: removeNulls) (lib.filterAttrs (_: x: x != null) v)
    else if lib.isList v then
      map removeNulls (lib.filter (x: x != null) v)
    else
      v;

  # The manifest grit runs. A Nix path literal is copied to the store by the
  # interpolation; a string path is used as it is.
  manifestOf =
    name: p:
    if p.manifest != null then
      (if builtins.isPath p.manifest then "${p.manifest}" else p.manifest)
    else
      "${tomlFormat.generate "grit-${name}.toml" (
        # settings = null only with a failed assertion; render {} then.
        lib.recursiveUpdate { pipeline.name = name; } (removeNulls (lib.optionalAttrs (p.settings != null) p.settings))
      )}";

  # dataDir relative to /var/lib, or null when it lies elsewhere.
  stateDirOf =
    p: if lib.hasPrefix "/var/lib/" p.dataDir then lib.removePrefix "/var/lib/" p.dataDir else null;

  # `read_write` paths a settings-based manifest declares (pipeline default and
  # per step). ProtectSystem=strict would make them read-only for the whole
  # unit, so they are added to ReadWritePaths ("-": ignored when missing).
  readWriteOfSettings =
    s:
    let
      steps = s.step or [ ];
      listOr = x: if lib.isList x then x else [ ];
    in
    listOr (s.pipeline.read_write or [ ])
    ++ lib.concatMap (st: listOr (st.read_write or [ ])) (listOr steps);

  # Quoting for one argument on an Exec*= line (systemd.service(5) "Command
  # lines"): a C-style quoted string, with % and $ doubled so that systemd
  # expands neither specifiers nor variables.
  escapeExecArg =
    arg:
    builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (
      builtins.toJSON (if builtins.isPath arg then "${arg}" else toString arg)
    );

  runArgs =
    name: p:
    [
      "run"
      "--manifest"
      (manifestOf name p)
      "--db"
      p.dataDir
      "--log-format"
      "journald"
      # A new store is readable by the service user alone unless grit is
      # given a group: dirs 2750, objects 0440, database 0640 for `group`,
      # whose members may then use the admin command's read-only
      # subcommands as themselves (see mkWrapper).
      "--group"
      p.group
    ]
    ++ lib.optionals (p.parallel != null) [
      "--parallel"
      (toString p.parallel)
    ]
    ++ p.extraArgs;

  # `bash` for grit's default shell, `bash -euo pipefail -c` (NixOS's default
  # service PATH has coreutils, findutils, grep, sed and systemd, but no
  # shell; without bash grit falls back to `sh -ec`, which pkgs.bash also has).
  scriptPath = p: [ pkgs.bash ] ++ p.path;

  # Subcommands that only read the store: members of the pipeline's group may
  # run them as themselves (the store is theirs to read, grit run --group).
  readOnlySubcommands = [
    "status"
    "resources"
    "cat"
    "log"
    "why"
    "graph"
    "validate"
  ];

  # Subcommands that take `--db`; `run` and `validate` also get `--manifest`.
  # Anything else (doctor, completions, man, help, ...) gets no flags, but
  # GRIT_DB is exported as well, which grit reads when `--db` is absent.
  dbSubcommands = [
    "status"
    "resources"
    "cat"
    "export"
    "log"
    "ingest"
    "gc"
    "delete"
    "prune"
    "why"
    "graph"
  ];

  mkWrapper =
    name: p:
    let
      q = lib.escapeShellArg;
      envFile = p.environmentFile;
    in
    pkgs.writeShellScriptBin "grit-${name}" ''
      # grit-${name}: `grit` preset for the pipeline "${name}" of services.grit.
      #   grit-${name} status | resources --json | log TASK | why HASH | run | validate | ...
      # Root runs grit as ${p.user}; ${p.user} runs it directly; members of the
      # group ${p.group} (which can read the store: grit run --group) run the
      # read-only subcommands directly; others go through sudo.
      set -euo pipefail

      user=${q p.user}
      group=${q p.group}
      db=${q p.dataDir}
      manifest=${q (manifestOf name p)}
      grit=${q (lib.getExe cfg.package)}

      # The subcommand: the first argument that is not an option.
      first=
      for a in "$@"; do
        case "$a" in -*) ;; *) first=$a; break ;; esac
      done
      readonly_sub=false
      case "$first" in
        ${lib.concatStringsSep " | " readOnlySubcommands}) readonly_sub=true ;;
      esac
      in_group=false
      for g in $(${pkgs.coreutils}/bin/id -Gn); do
        [ "$g" = "$group" ] && in_group=true
      done

      uid=$(${pkgs.coreutils}/bin/id -u)
      if [ "$uid" != 0 ] && [ "$(${pkgs.coreutils}/bin/id -un)" != "$user" ] &&
        ! { $in_group && $readonly_sub; }; then
        if [ -x /run/wrappers/bin/sudo ]; then
          exec /run/wrappers/bin/sudo -- "$0" "$@"
        fi
        echo "grit-${name}: run this as root or as $user" >&2
        exit 1
      fi

      ${lib.optionalString (envFile != null) ''
        # The unit's EnvironmentFile= (KEY=VALUE lines, # comments), parsed
        # rather than sourced so that nothing in it is executed. Read before
        # dropping privileges: such files are often readable by root only.
        env_file=${q envFile}
        if [ -r "$env_file" ]; then
          while IFS= read -r line || [ -n "$line" ]; do
            line="''${line#"''${line%%[![:space:]]*}"}"
            case "$line" in "" | "#"* | ";"*) continue ;; esac
            key="''${line%%=*}"
            value="''${line#*=}"
            key="''${key%"''${key##*[![:space:]]}"}"
            case "$value" in
              \"*\") value="''${value:1:''${#value}-2}" ;;
              \'*\') value="''${value:1:''${#value}-2}" ;;
            esac
            if [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
              export "$key=$value"
            else
              echo "grit-${name}: $env_file: ignoring line with invalid name '$key'" >&2
            fi
          done < "$env_file"
        else
          echo "grit-${name}: warning: cannot read $env_file; its variables are not set" >&2
        fi
      ''}
      # The same environment and PATH as the service.
      export GRIT_DB="$db"
      ${lib.concatStrings (
        lib.mapAttrsToList (k: v: "export ${q "${k}=${toString v}"}\n") p.environment
      )}export PATH=${q (lib.makeBinPath (scriptPath p))}''${PATH:+:$PATH}

      # Options before the subcommand are passed on as they are.
      pre=()
      while [ $# -gt 0 ] && [ "''${1#-}" != "$1" ]; do
        pre+=("$1")
        shift
      done

      if [ $# -gt 0 ]; then
        sub=$1
        shift
        rest=("$@")
        # given PATTERN...: does the user already pass one of these options?
        given() {
          local a o
          for a in "''${rest[@]}"; do
            [ "$a" = -- ] && return 1
            for o in "$@"; do
              # shellcheck disable=SC2254
              case "$a" in $o) return 0 ;; esac
            done
          done
          return 1
        }
        preset=()
        case "$sub" in
          run | validate)
            given '--manifest' '--manifest=*' '-m' '-m?*' || preset+=(--manifest "$manifest")
            ;;
        esac
        case "$sub" in
          run ${lib.concatMapStrings (s: "| ${s} ") dbSubcommands})
            given '--db' '--db=*' || preset+=(--db "$db")
            ;;
        esac
        set -- "$sub" "''${preset[@]}" "$@"
      fi

      if [ "$uid" = 0 ] && [ "$user" != root ]; then
        exec ${pkgs.util-linux}/bin/setpriv --reuid="$user" --regid="$group" --init-groups \
          -- "$grit" "''${pre[@]}" "$@"
      fi
      exec "$grit" "''${pre[@]}" "$@"
    '';

  pipelineModule =
    { name, config, ... }:
    {
      options = {
        enable = lib.mkEnableOption "the grit pipeline ${name}" // {
          default = true;
        };

        manifest = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = literalExpression ''"''${./pipelines}/nightly.toml"'';
          description = ''
            The pipeline's grit manifest (TOML). Set exactly one of
            `manifest` and `settings`.

            Scripts run in the manifest's directory. A path literal such as
            `./nightly.toml` copies only that file to the store; to ship the
            scripts next to it, copy the whole directory:
            `"''${./pipelines}/nightly.toml"`. A string such as
            `"/etc/grit/nightly.toml"` is used in place.
          '';
        };

        settings = mkOption {
          type = types.nullOr (types.attrsOf jsonFormat.type);
          default = null;
          example = literalExpression ''
            {
              pipeline.timeout = "30m";
              step = [
                { name = "fetch"; network = true; script = "curl -fsS https://example.org/data.csv > \"$OUTPUT_DIR/data.csv\""; }
                { name = "rows"; inputs = [ "data.csv" ]; script = "wc -l < \"$INPUT_FILE\" > \"$OUTPUT_DIR/rows\""; }
              ];
            }
          '';
          description = ''
            The manifest as Nix attributes, rendered to TOML with
            `pkgs.formats.toml`. Attributes set to `null` are removed.
            `pipeline.name` defaults to the attribute name `${name}`.
            `read_write` paths found here are made writable for the unit.
            Set exactly one of `manifest` and `settings`.

            A step's `image` may be a Nix-built root filesystem, e.g.
            `image = "''${pkgs.dockerTools.buildImage { name = "tools"; copyToRoot = [ pkgs.jq ]; }}"`
            or a `pkgs.buildEnv` path: the script then runs with that root
            instead of the host's (grit's own sandbox, no Docker daemon).
          '';
        };

        dataDir = mkOption {
          type = types.str;
          default = "/var/lib/grit/${name}";
          defaultText = literalExpression ''"/var/lib/grit/<name>"'';
          description = ''
            The grit store (`--db`): SQLite database, objects and staging
            area. Under /var/lib it is the unit's StateDirectory; elsewhere it
            is created with systemd-tmpfiles and added to ReadWritePaths. Keep
            it on a local disk (SQLite WAL).
          '';
        };

        startAt = mkOption {
          type = with types; either str (listOf str);
          default = [ ];
          example = [ "*-*-* 02:00:00" ];
          apply = lib.toList;
          description = ''
            When to run, as systemd calendar expressions (OnCalendar=, see
            {manpage}`systemd.time(7)`). The empty list means no timer: the
            pipeline runs only when started by hand
            (`systemctl start grit-${name}`).
          '';
        };

        timerConfig = mkOption {
          type =
            with types;
            attrsOf (oneOf [
              bool
              int
              str
              (listOf str)
            ]);
          default = { };
          example = {
            RandomizedDelaySec = "10m";
            Persistent = false;
          };
          description = ''
            Extra `[Timer]` settings, merged over the generated
            `{ OnCalendar = startAt; Persistent = true; }`. Ignored when
            `startAt` is empty. Use `startAt`, not `OnCalendar`, for the
            schedule.
          '';
        };

        path = mkOption {
          type = types.listOf types.package;
          default = [ ];
          example = literalExpression "[ pkgs.curl pkgs.jq ]";
          description = ''
            Packages whose `bin` directories are on the scripts' PATH (and on
            the `grit-${name}` command's).
          '';
        };

        environment = mkOption {
          type = types.attrsOf types.str;
          default = { };
          example = {
            TZ = "UTC";
          };
          description = ''
            Environment variables for grit and, through it, for every script.
            Values end up in the world-readable Nix store: use
            `environmentFile` for secrets.
          '';
        };

        environmentFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "/run/secrets/grit-nightly.env";
          description = ''
            A file of `KEY=VALUE` lines (systemd's EnvironmentFile=) read when
            the unit starts, for secrets. It stays out of the Nix store and may
            be readable by root only. The `grit-${name}` command reads it too.
          '';
        };

        parallel = mkOption {
          type = types.nullOr types.ints.positive;
          default = null;
          example = 4;
          description = "Global task concurrency (`--parallel`). Null: grit's default, the number of CPUs.";
        };

        user = mkOption {
          type = types.str;
          default = "grit";
          description = ''
            The user grit runs as. The module creates the `grit` system user;
            any other user must exist. Running as a normal user is the point:
            grit sandboxes each task in its own user namespace.
          '';
        };

        group = mkOption {
          type = types.str;
          default = "grit";
          description = "The group grit runs as. The module creates the `grit` group; any other must exist.";
        };

        extraArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "--max-tasks"
            "10000"
            "--json"
          ];
          description = "Extra arguments appended to `grit run`.";
        };
      };
    };
in
{
  options.services.grit = {
    package = lib.mkPackageOption pkgs "grit" { };

    pipelines = mkOption {
      type = types.attrsOf (types.submodule pipelineModule);
      default = { };
      example = literalExpression ''
        {
          nightly = {
            manifest = "''${./pipelines}/nightly.toml";
            startAt = "*-*-* 02:00:00";
            path = [ pkgs.curl pkgs.jq ];
            environmentFile = "/run/secrets/nightly.env";
          };
        }
      '';
      description = ''
        grit pipelines to run as systemd services. Each gets
        `grit-<name>.service`, a `grit-<name>.timer` when `startAt` is set,
        and a `grit-<name>` admin command.
      '';
    };
  };

  config = lib.mkIf (enabledPipelines != { }) {
    assertions = lib.concatLists (
      lib.mapAttrsToList (name: p: [
        {
          assertion = (p.manifest == null) != (p.settings == null);
          message =
            "services.grit.pipelines.${name}: set exactly one of `manifest` (a path to a grit TOML manifest) "
            + "or `settings` (the manifest as Nix attributes); "
            + (if p.manifest == null then "neither is set." else "both are set.");
        }
        {
          assertion = builtins.match "[A-Za-z0-9_.:-]+" name != null;
          message = "services.grit.pipelines.\"${name}\": the name becomes the unit grit-${name}.service, so it may only contain letters, digits and _ . : -";
        }
        {
          assertion = builtins.match "/.*[^/]" p.dataDir != null && builtins.match ".*/\\.\\.?(/.*)?" p.dataDir == null;
          message = "services.grit.pipelines.${name}.dataDir = \"${p.dataDir}\": must be an absolute path without . or .. components and without a trailing slash.";
        }
        {
          assertion = !(p.timerConfig ? OnCalendar);
          message = "services.grit.pipelines.${name}.timerConfig.OnCalendar: use `startAt` for the schedule.";
        }
      ]) enabledPipelines
    );

    warnings = lib.concatLists (
      lib.mapAttrsToList (
        name: p:
        lib.optional (p.startAt == [ ] && p.timerConfig != { })
          "services.grit.pipelines.${name}.timerConfig is set but startAt is empty, so there is no timer and timerConfig is ignored."
        ++ lib.optional (p.user != "root" && !config.security.allowUserNamespaces)
          "services.grit.pipelines.${name} runs as ${p.user}, but security.allowUserNamespaces = false: grit's task sandbox needs user namespaces, so sandboxed steps will fail (or mark them sandbox = \"off\")."
      ) enabledPipelines
    );

    users.users = lib.mkIf (lib.any (p: p.user == "grit") (lib.attrValues enabledPipelines)) {
      grit = {
        isSystemUser = true;
        group = "grit";
        description = "grit pipeline runner";
      };
    };
    users.groups = lib.mkIf (lib.any (p: p.user == "grit" || p.group == "grit") (
      lib.attrValues enabledPipelines
    )) { grit = { }; };

    # A dataDir outside /var/lib is not a StateDirectory: create it.
    systemd.tmpfiles.rules = lib.concatLists (
      lib.mapAttrsToList (
        _: p: lib.optional (stateDirOf p == null) "d ${p.dataDir} 2750 ${p.user} ${p.group} - -"
      ) enabledPipelines
    );

    systemd.services = lib.mapAttrs' (
      name: p:
      let
        stateDir = stateDirOf p;
      in
      lib.nameValuePair "grit-${name}" {
        description = "grit pipeline ${name}";
        documentation = [ "man:grit(1)" ];
        # Pipelines usually fetch something; wait for the network like restic.
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        path = scriptPath p;
        environment = p.environment;
        # A rebuild must not start (or restart) a run; the timer does that.
        restartIfChanged = false;
        unitConfig.RequiresMountsFor = [ p.dataDir ];

        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${lib.getExe cfg.package} ${lib.concatMapStringsSep " " escapeExecArg (runArgs name p)}";
          User = p.user;
          Group = p.group;
          # On stop, SIGTERM only grit, which cancels its tasks (killing each
          # task's pid namespace) and records them; SIGKILL the rest after
          # TimeoutStopSec.
          KillMode = "mixed";
          # Store files stay out of reach of other users.
          UMask = "0027";

          # ---- Hardening ------------------------------------------------
          # grit confines every task itself (DESIGN §4): unshare(CLONE_NEWUSER
          # | NEWNS | NEWPID | NEWNET | NEWIPC | NEWUTS), mount(2) of a tmpfs
          # root, read-only binds, a fresh /proc and a FUSE capture fs on
          # /dev/fuse, pivot_root, sethostname, landlock, capability drop and
          # no_new_privs. The settings below confine the unit as a whole and
          # were chosen to leave all of that working.

          # The whole file system is read-only for the unit except the store
          # (StateDirectory or ReadWritePaths below). These are mounts in the
          # unit's namespace; in a task's user namespace they become locked
          # mounts, which grit only bind-mounts and never tries to unlock.
          ProtectSystem = "strict";
          # Home directories readable (steps may list them in read_only) but
          # never writable; add ReadWritePaths for exceptions.
          ProtectHome = "read-only";
          # A private /tmp; tasks get their own scratch dir inside the store.
          PrivateTmp = true;
          # cgroupfs read-only; grit limits tasks with rlimits, not cgroups.
          # A plain read-only mount, it does not imply NoNewPrivileges.
          ProtectControlGroups = true;
          # Device access through the cgroup device controller instead of
          # PrivateDevices (see below): the pseudo devices "closed" allows
          # (null, zero, full, random, urandom, tty, ptmx) plus /dev/fuse,
          # which the FUSE capture needs. Add entries for other devices with
          # systemd.services."grit-<name>".serviceConfig.DeviceAllow.
          DevicePolicy = "closed";
          DeviceAllow = [ "/dev/fuse rw" ];
          # ---- Left out on purpose ----------------------------------------
          # RestrictNamespaces: grit creates user, mount, pid, net, ipc and
          #   uts namespaces for every task. An allow-list of exactly those
          #   would gain little (cgroup/time) and is seccomp-based, so it
          #   implies NoNewPrivileges for a non-root User= (see below).
          # PrivateDevices: a private /dev has no /dev/fuse, so FUSE capture
          #   would fail (and it implies NoNewPrivileges). DevicePolicy +
          #   DeviceAllow above give the same protection with /dev/fuse.
          # NoNewPrivileges: not needed by grit (it sets no_new_privs on every
          #   sandboxed task itself), but it would strip setuid/file-caps
          #   helpers (/run/wrappers/bin: fusermount3, ping, sudo) from steps
          #   with sandbox = "off" and from fuser's fusermount3 fallback. Set
          #   it yourself if no step needs them.
          # SystemCallFilter: the sandbox needs mount, umount2, pivot_root,
          #   unshare, setns, sethostname, capset and the landlock_* calls,
          #   which @system-service does not include; a grit-specific list
          #   would have to track the Rust code, and a miss turns into EPERM
          #   inside the sandbox. grit applies landlock to each task instead.
          # Every other seccomp-based setting implies NoNewPrivileges for a
          #   non-root User= and is left out for the same reason:
          #   SystemCallArchitectures, RestrictAddressFamilies,
          #   RestrictRealtime, RestrictSUIDSGID, LockPersonality,
          #   MemoryDenyWriteExecute (also breaks JITs in scripts),
          #   ProtectClock, ProtectKernelModules, ProtectKernelLogs,
          #   ProtectHostname (its filter on sethostname would also break the
          #   tasks' own UTS namespace).
          # ProtectKernelTunables, ProtectProc=invisible, ProcSubset=pid:
          #   they cover or restrict /proc, so the kernel refuses the fresh
          #   /proc mount inside a task's user namespace ("mount too
          #   revealing": the inherited procfs is not fully visible).
          # PrivateUsers: the unit's own user namespace would map only the
          #   service user; nested task namespaces would lose the real uid and
          #   /dev/fuse access checks would change.
          # PrivateNetwork: steps with network = true need the host network.
          # CapabilityBoundingSet: irrelevant for a non-root user (a new user
          #   namespace starts with a full set anyway); emptying it would
          #   break setuid helpers like NoNewPrivileges would, and a root
          #   pipeline needs CAP_SYS_ADMIN to set up task namespaces.
        }
        // lib.optionalAttrs (stateDir != null) {
          StateDirectory = stateDir;
          # What grit run --group gives a new store (2750: group-readable,
          # setgid so that new files get the group); systemd re-applies it.
          StateDirectoryMode = "2750";
        }
        // lib.optionalAttrs (
          stateDir == null || (p.settings != null && readWriteOfSettings p.settings != [ ])
        ) {
          ReadWritePaths =
            lib.optional (stateDir == null) p.dataDir
            ++ map (d: "-${d}") (lib.optionals (p.settings != null) (readWriteOfSettings p.settings));
        }
        // lib.optionalAttrs (p.environmentFile != null) {
          EnvironmentFile = p.environmentFile;
        };
      }
    ) enabledPipelines;

    systemd.timers = lib.mapAttrs' (
      name: p:
      lib.nameValuePair "grit-${name}" {
        description = "Scheduled runs of grit pipeline ${name}";
        wantedBy = [ "timers.target" ];
        timerConfig = lib.mkMerge [
          {
            OnCalendar = p.startAt;
            # Catch up on a run missed while the machine was off.
            Persistent = lib.mkDefault true;
          }
          p.timerConfig
        ];
      }
    ) (lib.filterAttrs (_: p: p.startAt != [ ]) enabledPipelines);

    environment.systemPackages = lib.mapAttrsToList mkWrapper enabledPipelines;
  };
}
