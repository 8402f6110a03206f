# NixOS module: `services.grit.pipelines.<name>` and `services.grit.server`.
#
# Each enabled pipeline that the server does not serve becomes
#   * `grit-<name>.service`: a oneshot unit running `grit run` on the pipeline's
#     manifest and store, logging to journald with grit's structured fields;
#   * `grit-<name>.timer`: when `startAt` is not empty;
#   * `grit-<name>`: an admin command with the pipeline's `--db` (and
#     `--manifest` for `run`/`validate`) preset, run as the service user.
#
# With `services.grit.server.enable`, the pipelines it serves (all enabled
# ones unless `services.grit.server.pipelines` lists some) are run by one
# long-running `grit serve` instead (`grit-server.service`, optionally
# socket-activated by `grit-server.socket`); they keep their `grit-<name>`
# admin command but get no oneshot unit or timer of their own, so that only
# one process ever runs them (the store admits one run at a time). A
# `grit-token` command mints API tokens with the server's secret.
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

  # ---- services.grit.server ------------------------------------------------
  srv = cfg.server;

  # The pipelines the server runs, and those that keep a oneshot unit.
  servedNames = if srv.enable then srv.pipelines else [ ];
  servedPipelines = lib.filterAttrs (name: _: lib.elem name servedNames) enabledPipelines;
  unitPipelines = lib.filterAttrs (name: _: !(lib.elem name servedNames)) enabledPipelines;
  served = lib.attrValues servedPipelines;

  # `listen`: "unix:/PATH" or "HOST:PORT" (HOST a name, an IPv4 address or a
  # bracketed IPv6 address), as grit serve reads it.
  listenUnix = lib.hasPrefix "unix:" srv.listen;
  socketPath = lib.removePrefix "unix:" srv.listen;
  socketPathValid =
    builtins.match "/.*[^/]" socketPath != null
    && builtins.match ".*/\\.\\.?(/.*)?" socketPath == null
    && builtins.match ".*[[:space:]].*" socketPath == null;
  # The socket's directory below /run, made the unit's RuntimeDirectory when
  # grit serve creates the socket itself (ProtectSystem=strict: /run is
  # read-only for the unit otherwise).
  socketRuntimeDir =
    let
      dir = dirOf socketPath;
    in
    if lib.hasPrefix "/run/" dir && dir != "/run/" then lib.removePrefix "/run/" dir else null;
  tcpParts = builtins.match "([[][0-9A-Fa-f:.]+[]]|[A-Za-z0-9._-]+):([0-9]{1,5})" srv.listen;
  listenHost = if tcpParts == null then null else builtins.elemAt tcpParts 0;
  listenPort = if tcpParts == null then null else lib.toInt (builtins.elemAt tcpParts 1);
  listenValid =
    if listenUnix then socketPathValid else tcpParts != null && listenPort >= 1 && listenPort <= 65535;
  listenTcp = !listenUnix && listenValid;
  listenLoopback =
    listenTcp
    && (
      builtins.match "127[.][0-9.]+" listenHost != null
      || listenHost == "[::1]"
      || listenHost == "localhost"
    );
  # systemd's ListenStream= takes addresses, not names.
  listenHostIsAddress =
    listenTcp
    && (builtins.match "[0-9.]+" listenHost != null || builtins.match "[[].*[]]" listenHost != null);
  # A port below 1024 needs CAP_NET_BIND_SERVICE, unless systemd binds it.
  needsBindCap = listenTcp && !srv.socketActivation && listenPort < 1024;

  # The token secret: by default a file in the server's StateDirectory that
  # grit creates (0600, 32 random bytes) on first start; otherwise the
  # admin's file, handed over with LoadCredential= so that it may stay
  # readable by root alone.
  secretInState = srv.tokenSecretFile == null;
  defaultSecretFile = "/var/lib/grit-server/token-secret";
  credentialSecretFile = "/run/credentials/grit-server.service/token-secret";
  secretForServer = if secretInState then defaultSecretFile else credentialSecretFile;

  # Keys of the server config that the module derives from other options.
  reservedServerKeys = [
    "listen"
    "token_secret_file"
    "pipelines"
  ];
  reservedPipelineKeys = [
    "manifest"
    "db"
    "group"
    "jobs"
  ];

  # Drops empty lists and attribute sets too (schedule = [ ], params = { }),
  # so that grit's own defaults apply.
  removeEmpty =
    v:
    lib.filterAttrs (_: x: x != [ ] && x != { }) (removeNulls v);

  serverPipelineEntry =
    name: p:
    removeEmpty p.serverSettings
    // {
      manifest = manifestOf name p;
      db = p.dataDir;
      group = p.group;
    }
    // lib.optionalAttrs (p.parallel != null) { jobs = p.parallel; };

  serverConfig = tomlFormat.generate "grit-server.toml" (
    removeEmpty srv.settings
    // {
      inherit (srv) listen;
      token_secret_file = secretForServer;
      pipelines = lib.mapAttrs serverPipelineEntry servedPipelines;
    }
  );
  # Where the server and `grit token --config` read it; a change of it alone
  # reloads the server (SIGHUP) instead of restarting it.
  serverConfigPath = "/etc/grit/server.toml";

  # The served pipelines share one process, so one environment: variables
  # that two of them set to different values cannot both hold.
  servedEnvNames = lib.unique (lib.concatMap (p: lib.attrNames p.environment) served);
  envConflicts = lib.filter (
    k: lib.length (lib.unique (lib.catAttrs k (map (p: p.environment) served))) > 1
  ) servedEnvNames;
  servedEnvironment = lib.foldl' (acc: p: acc // p.environment) { } served;

  # A served store under /var/lib is one of the server's StateDirectories
  # only when it has the server's group: systemd re-chowns a StateDirectory
  # whose owner is not the unit's User:Group, which would undo the sharing
  # grit gives a store with another group. Such stores, like those outside
  # /var/lib, are created by systemd-tmpfiles and made ReadWritePaths.
  serverStateDirOf = p: if p.group == srv.group then stateDirOf p else null;

  servedDataDirs = map (p: p.dataDir) served;
  duplicateDataDirs = lib.unique (
    lib.filter (d: lib.length (lib.filter (x: x == d) servedDataDirs) > 1) servedDataDirs
  );

  # `grit-token`: `grit token` with the server's secret, as the server's user
  # (so that a secret grit creates belongs to it), or as root for an
  # admin-provided secret (which may be readable by root alone).
  tokenHelper =
    let
      q = lib.escapeShellArg;
    in
    pkgs.writeShellScriptBin "grit-token" ''
      # grit-token: mints a token for the grit server (services.grit.server).
      #   grit-token --role operator --ttl 1h      # or --role viewer
      # Prints one JWT on stdout; use it as `Authorization: Bearer <token>`.
      set -euo pipefail

      user=${q srv.user}
      group=${q srv.group}
      grit=${q (lib.getExe cfg.package)}
      ${
        if secretInState then
          ''
            # The secret lives in the server's state directory: read (or, before
            # the server's first start, create) it as the server's user.
            as_root=false
            args=(token --config ${q "${serverConfig}"})
          ''
        else
          ''
            # The admin's secret file, which may be readable by root alone.
            as_root=true
            args=(token --token-secret-file ${q srv.tokenSecretFile})
          ''
      }
      uid=$(${pkgs.coreutils}/bin/id -u)
      if [ "$uid" = 0 ]; then
        if $as_root; then
          exec "$grit" "''${args[@]}" "$@"
        fi
        exec ${pkgs.util-linux}/bin/setpriv --reuid="$user" --regid="$group" --init-groups \
          -- "$grit" "''${args[@]}" "$@"
      fi
      if ! $as_root && [ "$(${pkgs.coreutils}/bin/id -un)" = "$user" ]; then
        exec "$grit" "''${args[@]}" "$@"
      fi
      if [ -x /run/wrappers/bin/sudo ]; then
        exec /run/wrappers/bin/sudo -- "$0" "$@"
      fi
      echo "grit-token: run this as root${lib.optionalString secretInState " or as $user"}" >&2
      exit 1
    '';

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
        lib.recursiveUpdate { pipeline.name = name; } (
          removeNulls (lib.optionalAttrs (p.settings != null) p.settings) // slurmExecutorTable p
        )
      )}";

  # The generated manifest's [executor] table for executor.slurm.
  slurmSettingsOf =
    p:
    removeNulls (
      builtins.removeAttrs p.executor.slurm [
        "slurmConf"
        "sbatch_args"
      ]
    )
    // lib.optionalAttrs (p.executor.slurm.sbatch_args != [ ]) { inherit (p.executor.slurm) sbatch_args; };
  slurmExecutorTable =
    p:
    lib.optionalAttrs (p.executor.slurm != null) {
      executor = {
        kind = "slurm";
      }
      // slurmSettingsOf p;
    };

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
    ++ lib.optionals (p.executor.slurm != null) [
      "--executor"
      "slurm"
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

        executor.slurm = mkOption {
          default = null;
          description = ''
            Run this pipeline's tasks as jobs of a Slurm cluster (`grit run
            --executor slurm`). The store (`dataDir`), the manifest and the grit
            binary must be on a filesystem every node mounts at the same path;
            this host stays the store's single writer (see the README, "Running
            on a Slurm cluster"). The job settings are written into the
            generated manifest's `[executor]` table; with a `manifest` file, put
            them in its `[executor]` table instead.
          '';
          type = types.nullOr (
            types.submodule {
              options = {
                slurmConf = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  example = "/etc/slurm/slurm.conf";
                  description = "SLURM_CONF for the Slurm clients grit runs (sbatch, squeue, sacct, scancel); null: the clients' default.";
                };
                partition = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  description = "Slurm partition of every step's jobs.";
                };
                account = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  description = "Slurm account of every step's jobs.";
                };
                time = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  example = "2h";
                  description = "Wall-clock limit of one job (a group of tasks).";
                };
                mem = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  example = "4G";
                  description = "Memory of one job.";
                };
                cpus = mkOption {
                  type = types.nullOr types.ints.positive;
                  default = null;
                  description = "CPUs per job (--cpus-per-task).";
                };
                max_jobs = mkOption {
                  type = types.nullOr types.ints.positive;
                  default = null;
                  description = "At most this many jobs (array elements) queued or running (grit's default: 100).";
                };
                group_target = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  example = "30s";
                  description = "Tasks are grouped until one job lasts about this long (grit's default: 30s).";
                };
                sbatch_args = mkOption {
                  type = types.listOf types.str;
                  default = [ ];
                  example = [ "--qos=short" ];
                  description = "More sbatch arguments.";
                };
              };
            }
          );
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

        serverSettings = mkOption {
          type = types.submodule {
            freeformType = types.attrsOf jsonFormat.type;
            options = {
              queue_limit = mkOption {
                type = types.nullOr types.ints.unsigned;
                default = null;
                example = 10;
                description = "Length of the wait list; a trigger past it gets HTTP 429. Null: grit's default.";
              };
              queue_strategy = mkOption {
                type = types.nullOr (
                  types.enum [
                    "append"
                    "replace"
                  ]
                );
                default = null;
                description = ''
                  `append` queues every trigger; `replace` lets a new trigger
                  replace the queued run (never the running one). Null: grit's
                  default.
                '';
              };
              start_delay = mkOption {
                type = types.nullOr types.str;
                default = null;
                example = "30s";
                description = "Debounce: a run starts only after no new trigger came for this long (humantime).";
              };
              schedule = mkOption {
                type = types.nullOr (types.coercedTo types.str lib.toList (types.listOf types.str));
                default = null;
                example = [
                  "*/15 * * * *"
                  "every 10m"
                ];
                description = ''
                  When the server queues a run: cron expressions (5 fields) or
                  `every DURATION`. Ticks missed while the server was down run
                  once at start-up. This replaces `startAt` for a served
                  pipeline (systemd calendar expressions are not cron).
                '';
              };
              watch = mkOption {
                type = types.nullOr (types.coercedTo types.str lib.toList (types.listOf types.str));
                default = null;
                example = [ "/srv/incoming" ];
                description = ''
                  Paths whose changed files are ingested and queue a run. The
                  server reads them as its user; they stay read-only for it.
                '';
              };
              keep_runs = mkOption {
                type = types.nullOr types.ints.positive;
                default = null;
                example = 100;
                description = "Run records and logs kept (the store's resources are not touched).";
              };
              keep_days = mkOption {
                type = types.nullOr types.ints.positive;
                default = null;
                example = 30;
                description = "Days run records and logs are kept (the store's resources are not touched).";
              };
              params = mkOption {
                type = types.nullOr (types.attrsOf types.str);
                default = null;
                example = {
                  region = "eu";
                };
                description = "Default values of the manifest's `[pipeline.params]` for this pipeline's runs.";
              };
            };
          };
          default = { };
          example = literalExpression ''
            {
              queue_limit = 10;
              queue_strategy = "replace";
              schedule = [ "0 2 * * *" ];
              watch = [ "/srv/incoming" ];
              params.region = "eu";
            }
          '';
          description = ''
            This pipeline's entry in the config of `grit serve`
            (`[pipelines.${name}]`), when `services.grit.server` serves it.
            Keys are grit's; null, `[ ]` and `{ }` leave grit's default. Other
            keys grit may add can be set here too. `manifest`, `db`, `group`
            and `jobs` come from `manifest`/`settings`, `dataDir`, `group` and
            `parallel`.
          '';
        };
      };
    };
in
{
  options.services.grit = {
    package = lib.mkPackageOption pkgs "grit" { };

    server = {
      enable = lib.mkEnableOption "the grit server (`grit serve`: an authenticated HTTP API, run queues, schedules and file watches for the pipelines in `services.grit.server.pipelines`)";

      pipelines = mkOption {
        type = types.listOf types.str;
        default = lib.attrNames enabledPipelines;
        defaultText = literalExpression "lib.attrNames (lib.filterAttrs (_: p: p.enable) config.services.grit.pipelines)";
        example = [ "etl" ];
        description = ''
          The pipelines of `services.grit.pipelines` the server serves, by
          name (the name in the API: `/api/v1/pipelines/<name>`). By default
          all enabled ones. A served pipeline is run by the server alone: it
          gets no `grit-<name>.service` or timer (schedule it with its
          `serverSettings.schedule`) and keeps its `grit-<name>` admin
          command. List names here to keep the others as
          `grit-<name>.service` units.
        '';
      };

      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:9009";
        example = "unix:/run/grit-server/api.sock";
        description = ''
          `HOST:PORT` (an IPv6 host in brackets: `[::]:9009`) or
          `unix:/PATH`. Without `socketActivation` a socket path must lie in a
          directory under /run, which becomes the unit's RuntimeDirectory.
        '';
      };

      socketActivation = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Let systemd own the listening socket (`grit-server.socket`): it
          outlives restarts of the server, so connections wait instead of
          being refused; a port below 1024 needs no capability; a unix socket
          is `0660`, owned by `user` and `group`. The server is still started
          at boot (it runs schedules and resumes interrupted runs).
        '';
      };

      tokenSecretFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/grit-token-secret";
        description = ''
          The secret that signs API tokens (JWT HS256). Null: `${defaultSecretFile}`,
          created by grit (mode 0600, 32 random bytes) when missing. A path:
          an existing file outside the Nix store, handed to the server with
          `LoadCredential=`, so it may be readable by root alone. Mint tokens
          with `grit-token --role operator --ttl 1h`.
        '';
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the TCP port of `listen` in the firewall. Only for a TCP `listen` on a non-loopback address.";
      };

      user = mkOption {
        type = types.str;
        default = "grit";
        description = ''
          The user the server (and every pipeline it serves) runs as; each
          served pipeline's `user` must be the same. Not root: the server is a
          network service, and grit sandboxes tasks in user namespaces as a
          regular user.
        '';
      };

      group = mkOption {
        type = types.str;
        default = "grit";
        description = "The server's primary group. The groups of the served pipelines are added as supplementary groups.";
      };

      settings = mkOption {
        type = types.submodule {
          freeformType = types.attrsOf jsonFormat.type;
          options = {
            shutdown_timeout = mkOption {
              type = types.str;
              default = "30s";
              description = ''
                On stop (SIGTERM) the running run may finish for this long,
                then it is cancelled. The unit's TimeoutStopSec is this plus
                30 s.
              '';
            };
            request_timeout = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "30s";
              description = "Timeout of an HTTP request (streaming endpoints are exempt). Null: grit's default.";
            };
          };
        };
        default = { };
        example = {
          shutdown_timeout = "5m";
          request_timeout = "1m";
        };
        description = ''
          Top-level keys of the `grit serve` config (rendered with
          `pkgs.formats.toml` to ${serverConfigPath}); nulls are removed.
          `listen`, `token_secret_file` and `pipelines` come from the options
          above and from `services.grit.pipelines.<name>.serverSettings`.
        '';
      };
    };

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

  config = lib.mkMerge [
    (lib.mkIf (enabledPipelines != { }) {
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
            assertion = p.executor.slurm == null || p.manifest == null || slurmSettingsOf p == { };
            message =
              "services.grit.pipelines.${name}.executor.slurm: job settings go into a generated manifest only; "
              + "with `manifest` set, write them in its [executor] table and keep only slurmConf here.";
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

      users.users = lib.mkIf (
        lib.any (p: p.user == "grit") (lib.attrValues enabledPipelines) || srv.enable && srv.user == "grit"
      ) {
        grit = {
          isSystemUser = true;
          group = "grit";
          description = "grit pipeline runner";
        };
      };
      users.groups = lib.mkIf (
        lib.any (p: p.user == "grit" || p.group == "grit") (lib.attrValues enabledPipelines)
        || srv.enable && (srv.user == "grit" || srv.group == "grit")
      ) { grit = { }; };

      # A dataDir outside /var/lib is not a StateDirectory: create it (for a
      # served store also one with a group other than the server's, see
      # serverStateDirOf).
      systemd.tmpfiles.rules =
        let
          rule = p: "d ${p.dataDir} 2750 ${p.user} ${p.group} - -";
        in
        lib.concatLists (
          lib.mapAttrsToList (_: p: lib.optional (stateDirOf p == null) (rule p)) unitPipelines
          ++ lib.mapAttrsToList (_: p: lib.optional (serverStateDirOf p == null) (rule p)) servedPipelines
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
          environment =
            p.environment
            // lib.optionalAttrs (p.executor.slurm != null && p.executor.slurm.slurmConf != null) {
              SLURM_CONF = p.executor.slurm.slurmConf;
            };
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
      ) unitPipelines;

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
      ) (lib.filterAttrs (_: p: p.startAt != [ ]) unitPipelines);

      environment.systemPackages = lib.mapAttrsToList mkWrapper enabledPipelines;
    })
    (lib.mkIf srv.enable {
      assertions =
        [
          {
            assertion = servedPipelines != { };
            message =
              "services.grit.server is enabled but serves no pipeline: declare one in services.grit.pipelines "
              + "(the server serves every enabled one unless services.grit.server.pipelines lists some).";
          }
          {
            assertion = srv.user != "root";
            message =
              "services.grit.server.user = \"root\": the server is a network service and must run as a regular user "
              + "(grit sandboxes each task in a user namespace of that user); keep the default \"grit\" or name another.";
          }
          {
            assertion = listenValid;
            message =
              "services.grit.server.listen = \"${srv.listen}\": expected HOST:PORT (port 1-65535, an IPv6 host in "
              + "brackets: \"[::]:9009\") or unix:/ABSOLUTE/PATH (no . or .. components, no trailing slash).";
          }
          {
            assertion = !(listenUnix && listenValid && !srv.socketActivation && socketRuntimeDir == null);
            message =
              "services.grit.server.listen = \"${srv.listen}\": without socketActivation the socket must lie in a "
              + "directory under /run (e.g. unix:/run/grit-server/api.sock), which the module makes the unit's "
              + "RuntimeDirectory; elsewhere the hardened unit cannot create it. Or set services.grit.server.socketActivation = true.";
          }
          {
            assertion = !(srv.openFirewall && listenUnix);
            message =
              "services.grit.server.openFirewall = true, but listen = \"${srv.listen}\" is a unix socket: "
              + "there is no TCP port to open. Set openFirewall = false, or listen on HOST:PORT.";
          }
          {
            assertion = !(srv.openFirewall && listenLoopback);
            message =
              "services.grit.server.openFirewall = true, but listen = \"${srv.listen}\" is a loopback address "
              + "that no other host can reach. Listen on a routable address (e.g. \"0.0.0.0:${toString listenPort}\" "
              + "or \"[::]:${toString listenPort}\"), or set openFirewall = false.";
          }
          {
            assertion = !(srv.socketActivation && listenTcp && !listenHostIsAddress);
            message =
              "services.grit.server.listen = \"${srv.listen}\": with socketActivation, systemd's ListenStream= "
              + "needs an IP address, not a host name (e.g. \"127.0.0.1:${toString listenPort}\").";
          }
          {
            assertion =
              secretInState
              || builtins.match "/.*[^/]" srv.tokenSecretFile != null
              && !lib.hasPrefix builtins.storeDir srv.tokenSecretFile;
            message =
              "services.grit.server.tokenSecretFile = \"${toString srv.tokenSecretFile}\": must be an absolute path "
              + "outside the Nix store (everything there is world-readable, and anyone with the secret can mint "
              + "operator tokens). Leave it null to let grit create one in /var/lib/grit-server.";
          }
          {
            assertion = lib.intersectLists reservedServerKeys (lib.attrNames srv.settings) == [ ];
            message =
              "services.grit.server.settings: ${lib.concatStringsSep ", " (lib.intersectLists reservedServerKeys (lib.attrNames srv.settings))} "
              + "cannot be set here; use services.grit.server.listen, services.grit.server.tokenSecretFile, and "
              + "services.grit.pipelines.<name>.serverSettings.";
          }
          {
            assertion = duplicateDataDirs == [ ];
            message =
              "services.grit.server: served pipelines share a store (dataDir ${lib.concatStringsSep ", " duplicateDataDirs}); "
              + "a store holds one pipeline, give each its own dataDir.";
          }
          {
            assertion = envConflicts == [ ];
            message =
              "services.grit.server: the served pipelines run in one process with one environment, but they set "
              + "${lib.concatStringsSep ", " envConflicts} to different values in services.grit.pipelines.<name>.environment. "
              + "Use one value, or serve only one of them.";
          }
        ]
        ++ map (name: {
          assertion = enabledPipelines ? ${name};
          message =
            "services.grit.server.pipelines: \"${name}\" is not an enabled pipeline of services.grit.pipelines "
            + "(enabled: ${lib.concatStringsSep ", " (lib.attrNames enabledPipelines)}).";
        }) srv.pipelines
        ++ lib.concatLists (
          lib.mapAttrsToList (name: p: [
            {
              assertion = p.startAt == [ ] && p.timerConfig == { };
              message =
                "services.grit.pipelines.${name} is served by services.grit.server, which runs it; startAt/timerConfig "
                + "would add a timer running `grit run` beside it. Use services.grit.pipelines.${name}.serverSettings.schedule "
                + "(cron, e.g. \"0 2 * * *\", or \"every 10m\"), or leave ${name} out of services.grit.server.pipelines.";
            }
            {
              assertion = p.extraArgs == [ ];
              message =
                "services.grit.pipelines.${name}.extraArgs are arguments of `grit run`, but ${name} is served by "
                + "services.grit.server, which does not use them. Remove them (queue and schedule keys go in serverSettings), "
                + "or leave ${name} out of services.grit.server.pipelines.";
            }
            {
              assertion = p.user == srv.user;
              message =
                "services.grit.pipelines.${name}.user = \"${p.user}\", but the server runs every pipeline it serves as "
                + "services.grit.server.user = \"${srv.user}\". Set both to the same user.";
            }
            {
              assertion = lib.intersectLists reservedPipelineKeys (lib.attrNames p.serverSettings) == [ ];
              message =
                "services.grit.pipelines.${name}.serverSettings: ${lib.concatStringsSep ", " (lib.intersectLists reservedPipelineKeys (lib.attrNames p.serverSettings))} "
                + "cannot be set here; the module takes manifest, db, group and jobs from the pipeline's "
                + "manifest/settings, dataDir, group and parallel.";
            }
          ]) servedPipelines
        );

      warnings = lib.mapAttrsToList (
        name: _:
        "services.grit.pipelines.${name}.serverSettings is set, but ${name} is not in services.grit.server.pipelines, so it is ignored."
      ) (lib.filterAttrs (name: p: removeEmpty p.serverSettings != { }) unitPipelines);

      # Read by the server (it reloads on SIGHUP when only this changes) and by
      # `grit token --config /etc/grit/server.toml`.
      environment.etc."grit/server.toml".source = serverConfig;

      systemd.services.grit-server = {
        description = "grit server: HTTP API, run queues and schedules";
        documentation = [ "man:grit(1)" ];
        # Started at boot even with socket activation: it runs schedules and
        # watches, and resumes a run that a crash interrupted.
        wantedBy = [ "multi-user.target" ];
        # Steps usually fetch something; missed schedule ticks run at start-up.
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ] ++ lib.optional srv.socketActivation "grit-server.socket";
        requires = lib.optional srv.socketActivation "grit-server.socket";
        path = [ pkgs.bash ] ++ lib.concatMap (p: p.path) served;
        environment = servedEnvironment;
        # A new config alone (manifests, queue keys, schedules) is applied with
        # SIGHUP, which keeps the running run; a new package, environment or
        # store directory restarts the unit, which lets the running run finish
        # for shutdown_timeout first.
        reloadTriggers = [ serverConfig ];
        unitConfig.RequiresMountsFor = servedDataDirs;

        serviceConfig =
          {
            Type = "exec";
            ExecStart = "${lib.getExe cfg.package} ${
              lib.concatMapStringsSep " " escapeExecArg [
                "serve"
                "--config"
                serverConfigPath
              ]
            }";
            ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
            User = srv.user;
            Group = srv.group;
            Restart = "on-failure";
            RestartSec = "2s";
            # SIGTERM only grit serve: it stops accepting, lets the running run
            # finish for shutdown_timeout, then cancels it (killing each task's
            # pid namespace) and records it; the margin covers the cancelling.
            KillMode = "mixed";
            TimeoutStopSec = "${srv.settings.shutdown_timeout} 30s";
            UMask = "0027";

            # ---- Hardening ------------------------------------------------
            # As for grit-<name>.service above (see its comments for each
            # setting left out: namespaces, /proc, /dev/fuse), plus what a
            # long-running network service of a regular user can have on top.
            ProtectSystem = "strict";
            ProtectHome = "read-only";
            PrivateTmp = true;
            ProtectControlGroups = true;
            DevicePolicy = "closed";
            DeviceAllow = [ "/dev/fuse rw" ];
            # NoNewPrivileges: the task sandbox does not need it off. grit
            # creates the task namespaces unprivileged, mounts FUSE and sets
            # no_new_privs and landlock on every sandboxed task itself, and uses
            # no setuid helper. What it takes away: setuid/file-caps programs
            # (/run/wrappers/bin: sudo, ping, fusermount3) in steps with
            # sandbox = "off". For a network service that is the better default;
            # set it to false for such steps.
            NoNewPrivileges = true;
            # With no_new_privs nothing can gain capabilities through exec, and
            # a regular user has none, so the bounding set can be empty: task
            # namespaces start with a full set of their own (user_namespaces(7))
            # and are unaffected. Only a port below 1024 without socket
            # activation needs CAP_NET_BIND_SERVICE (below).
            CapabilityBoundingSet = if needsBindCap then "CAP_NET_BIND_SERVICE" else "";
            # Seccomp filters, which are safe now that no_new_privs is set. They
            # break only exotic scripts: 32-bit binaries
            # (SystemCallArchitectures), realtime scheduling (RestrictRealtime),
            # `setarch` (LockPersonality).
            SystemCallArchitectures = "native";
            RestrictRealtime = true;
            LockPersonality = true;
            # ---- Left out on purpose (beyond grit-<name>.service's list) -------
            # RestrictSUIDSGID: it refuses the setgid bit on directories, and
            #   grit creates a store's directories 2750 for its group.
            # ProtectKernelLogs: it over-mounts /proc/kmsg, so the kernel refuses
            #   the fresh /proc of every task ("mount too revealing").
            # ProtectKernelModules, ProtectClock: nothing to gain for a user
            #   without capabilities; the first also over-mounts module dirs.
            # RestrictAddressFamilies: scripts with network = true may use any.
            # PrivateNetwork: the API listens on the host's network.
          }
          // lib.optionalAttrs needsBindCap {
            # Inherited by steps with sandbox = "off"; socketActivation avoids it.
            AmbientCapabilities = "CAP_NET_BIND_SERVICE";
          }
          // lib.optionalAttrs (listenUnix && !srv.socketActivation && socketRuntimeDir != null) {
            # grit serve creates the socket; members of the group may reach it.
            RuntimeDirectory = socketRuntimeDir;
            RuntimeDirectoryMode = "0750";
          }
          // lib.optionalAttrs (!secretInState) {
            # A copy readable by the service alone, at the path the config names.
            LoadCredential = "token-secret:${srv.tokenSecretFile}";
          }
          // (
            let
              rw =
                lib.concatMap (p: lib.optional (serverStateDirOf p == null) p.dataDir) served
                ++ map (d: "-${d}") (
                  lib.concatMap (p: lib.optionals (p.settings != null) (readWriteOfSettings p.settings)) served
                );
              envFiles = lib.filter (f: f != null) (map (p: p.environmentFile) served);
              # grit serve creates each store readable by the pipeline's group,
              # as grit run --group does; chgrp needs membership.
              groups = lib.unique (lib.filter (g: g != srv.group) (map (p: p.group) served));
              # The stores under /var/lib (see serverStateDirOf) and the default
              # token secret; 2750 as grit run --group makes a store.
              stateDirs =
                lib.optional secretInState "grit-server" ++ lib.filter (d: d != null) (map serverStateDirOf served);
            in
            lib.optionalAttrs (stateDirs != [ ]) {
              StateDirectory = stateDirs;
              StateDirectoryMode = "2750";
            }
            // lib.optionalAttrs (groups != [ ]) { SupplementaryGroups = groups; }
            // lib.optionalAttrs (rw != [ ]) { ReadWritePaths = lib.unique rw; }
            // lib.optionalAttrs (envFiles != [ ]) { EnvironmentFile = lib.unique envFiles; }
          );
      };

      systemd.sockets = lib.mkIf srv.socketActivation {
        grit-server = {
          description = "grit server API socket";
          wantedBy = [ "sockets.target" ];
          listenStreams = [ (if listenUnix then socketPath else srv.listen) ];
          socketConfig = lib.optionalAttrs listenUnix {
            # Who may connect: the server's user and group (and root); every
            # request still needs a token.
            SocketUser = srv.user;
            SocketGroup = srv.group;
            SocketMode = "0660";
            RemoveOnStop = true;
          };
        };
      };

      networking.firewall.allowedTCPPorts = lib.optional (srv.openFirewall && listenTcp) listenPort;

      environment.systemPackages = [ tokenHelper ];
    })
  ];
}
