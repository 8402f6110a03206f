//! The command line: clap definitions for every subcommand, plus the translation of GRIT's
//! single-dash spelling (`grit -manifest F -db D -run`) into the modern one.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "grit",
    version,
    about = "Run data pipelines made of shell scripts: sandboxed, content-addressed, incremental",
    long_about = "grit runs the steps of a TOML manifest. Every file a step writes into $OUTPUT_DIR becomes a \
resource, stored once by its SHA-256, and triggers the steps whose inputs match its name. SQLite remembers \
everything, so running again does only new work.",
    after_help = "Examples:\n  grit run                 # runs ./grit.toml (or the nearest above); store in .grit/ beside it\n  grit status              # from the pipeline's directory or any subdirectory\n  grit run -m examples/quickstart.toml --db ./db\n  grit resources --db ./db --json\n\nGRIT spelling also works: grit -manifest pipeline.toml -db ./db -run\n\nExit status: 0 ok, 1 a task failed, 2 usage or manifest error (or not a grit store), 3 store locked,\n4 store damaged (run `grit verify`), 5 environment error (the store or a file cannot be opened or written), 130/143 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the store is: `--db`, else `$GRIT_DB`, else `.grit/` beside the manifest (found as
/// `grit.toml` in the current directory or its parents); see `commands::locate`.
#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// Store directory [default: .grit/ beside the manifest, found from the current directory up]
    #[arg(long, env = "GRIT_DB", value_name = "DIR")]
    pub db: Option<PathBuf>,
}

/// Who may read a store that this command creates.
#[derive(Debug, Clone, Args)]
pub struct GroupArg {
    /// Create a new store readable by GROUP (directories 2750, objects 0440, database 0640)
    /// instead of by its owner alone (0700, 0400, 0600). An existing store keeps its
    /// permissions: `grit doctor --db DIR` shows how to change them.
    #[arg(long, env = "GRIT_GROUP", value_name = "GROUP")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureMode {
    /// FUSE where /dev/fuse works, else a plain directory
    Auto,
    /// Stream and hash through a FUSE mount
    Fuse,
    /// A plain directory hashed after the task exits
    Dir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    /// Processes on this machine, in the sandbox
    Local,
    /// Jobs of a Slurm cluster (sbatch); the store must be on a filesystem all nodes share
    Slurm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// journald under systemd (JOURNAL_STREAM), else text
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Clone, Args)]
pub struct Verbosity {
    /// Also print each task and the scripts' output
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only errors: each failed task's one-line summary and the verdict, nothing when all is well
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: execute every task that is new, and nothing else
    #[command(
        after_help = "Examples:\n  grit run                      # grit.toml here or above; store .grit/ beside it\n  grit run -m pipeline.toml\n  grit run -m pipeline.toml --db /var/lib/grit/x -j 4 --json\n  grit run -m pipeline.toml --step fetch --step parse --max-tasks 100\n  grit run -m pipeline.toml --force-step parse   # re-run every current task of parse\n  grit run -m pipeline.toml --param region=us --param year=2024   # values for [pipeline.params]\n  grit run -m pipeline.toml --db /srv/grit/db --group analysts   # a new store the group may read\n  grit run -m pipeline.toml --db /shared/grit/db --executor slurm   # tasks as Slurm jobs (see [executor])\n\nA new store is readable by its owner only (0700, objects 0400, database 0600) unless --group is given.\n\nExit status: 0 all tasks that ran succeeded, 1 a task failed, 2 usage or manifest error, 3 store locked, 4 store damaged (an input or live object is missing or corrupt), 5 environment error, 130/143 interrupted."
    )]
    Run(RunArgs),
    /// Print a task-pipeline manifest rewritten in grit's form (explicit `inputs`, `once`)
    #[command(
        name = "migrate-manifest",
        after_help = "Examples:\n  grit migrate-manifest workflow.toml > grit.toml\n  grit migrate-manifest workflow.toml --start process\n\nReads task-pipeline's forms ([[step]] tables with `start = true` routed by file name, or [[task]] tables) and prints the same pipeline with each step's `inputs` (or `once = true` for the start step), keeping comments and every other key. Running either gives the same resources."
    )]
    MigrateManifest {
        /// The manifest in task-pipeline's form
        #[arg(value_name = "FILE")]
        manifest: PathBuf,
        /// The start step, as task-pipeline's `-start NAME` (default: the one with `start = true`)
        #[arg(long, value_name = "STEP")]
        start: Option<String>,
    },
    /// Check a manifest and print its step graph
    #[command(
        after_help = "Examples:\n  grit validate\n  grit validate -m pipeline.toml --db ./db\n\nWhen the store exists, a step reading a name that nothing writes is not flagged if that name has been ingested."
    )]
    Validate {
        /// The manifest [default: grit.toml in the current directory or its parents]
        #[arg(short, long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Show each current step's tasks and live outputs
    #[command(
        after_help = "Examples:\n  grit status --db ./db\n  grit status --json | jq '.steps[] | select(.failed > 0)'\n  grit status -m pipeline.toml   # what an edited manifest would re-run\n  grit status -m pipeline.toml --param region=us\n\nShows the parameter values of the last run; with -m, the manifest's declared parameters, and the\nchanges `grit run` with the same --param values would make (declared defaults fill the rest; a\nrequired parameter not given keeps the last run's value)."
    )]
    Status {
        #[command(flatten)]
        db: DbArg,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        // --- data semantics (issue 19 item 7: status -m) ---
        /// Also show what this manifest would change: new step versions and their pending work
        #[arg(short, long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        // --- end data semantics ---
        /// With -m: compare at these parameter values, as `grit run --param` would run (repeatable)
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = param_assignment, requires = "manifest")]
        params: Vec<String>,
    },
    /// List resources (live ones by default)
    #[command(
        after_help = "Examples:\n  grit resources\n  grit resources done --json\n  grit resources 'report-*.csv' --all\n\nA NAME that matches nothing exits 2."
    )]
    Resources {
        /// Only resources with this name, or whose name matches this glob (`*`, `?`, `[a-z]`)
        name: Option<String>,
        #[command(flatten)]
        db: DbArg,
        /// Include history (resources that are no longer live)
        #[arg(long)]
        all: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Print the content of a resource, by hash (8+ characters of it are enough) or by name
    #[command(
        after_help = "Examples:\n  grit cat report.csv > report.csv\n  grit cat 5891b5b5 > hello.txt\n\nA name (or glob) must match exactly one live resource; when several do, they are listed with\ntheir hashes. Nothing matching exits 2."
    )]
    Cat {
        /// A hash or unique prefix of 8+ hex characters, or the name of a live resource
        #[arg(value_name = "HASH|NAME")]
        hash: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Write resources to a directory or a tar file as <name>/<hash>, or as <name> with --flat
    #[command(
        after_help = "Examples:\n  grit export done --to ./out\n  grit export 'report-*' --flat --to ./results\n  grit export done summary --tar results.tar --all\n\nFiles are written with ordinary permissions (0666 under the umask). A NAME that matches\nnothing exits 2."
    )]
    Export {
        /// Resource names or globs (`report-*.csv`)
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Directory to write into
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "tar",
            required_unless_present = "tar"
        )]
        to: Option<PathBuf>,
        /// Tar file to write
        #[arg(long, value_name = "FILE")]
        tar: Option<PathBuf>,
        /// Include history
        #[arg(long)]
        all: bool,
        /// Write live resources as plain <name> files (an error if two share a name)
        #[arg(long, conflicts_with = "all")]
        flat: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Print a task's stored output, exit status and error, or list failed tasks
    #[command(after_help = "Examples:\n  grit log 42\n  grit log --step parse --failed")]
    Log {
        /// Task id
        #[arg(required_unless_present_any = ["step", "failed"])]
        task: Option<i64>,
        /// List the tasks of this step
        #[arg(long)]
        step: Option<String>,
        /// Only failed tasks
        #[arg(long)]
        failed: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Show where a resource came from: the task, step version and input, back to the sources
    #[command(
        after_help = "Examples:\n  grit why 3d563c5d\n  grit why 3d563c5d --json | jq '.resources[0].made_by'"
    )]
    Why {
        /// Content hash of the resource (a unique prefix of 8+ characters is enough)
        hash: String,
        #[command(flatten)]
        db: DbArg,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Draw the steps and the resources flowing between them, with counts (Graphviz or Mermaid)
    #[command(
        after_help = "Examples:\n  grit graph | dot -Tsvg > pipeline.svg\n  grit graph --format mermaid"
    )]
    Graph {
        #[command(flatten)]
        db: DbArg,
        /// Output format
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Add files as facts (live resources), so a pipeline can start from existing data
    ///
    /// The files replace the live facts of the same name (the old ones stay as history until
    /// `grit gc`); files added in one command stay live together.
    #[command(
        after_help = "Examples:\n  grit ingest data/*.txt                  # each named after its file name: a.txt, b.txt, …\n  grit ingest --name config config.prod.json\n  grit ingest --keep-both more-seeds.txt  # keep the live seeds.txt too"
    )]
    Ingest {
        /// Resource name for a single file [default: each file's own name]
        #[arg(long)]
        name: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        // --- data semantics (issue 19 item 1) ---
        /// Keep the live facts of that name live too, instead of replacing them
        #[arg(long)]
        keep_both: bool,
        // --- end data semantics ---
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        group: GroupArg,
    },
    /// Remove history that nothing live uses, and report the bytes freed
    #[command(after_help = "Examples:\n  grit gc --dry-run\n  grit gc")]
    Gc {
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Delete resources by hash or name, and what was derived from them
    #[command(after_help = "Examples:\n  grit delete --hash 5891b5b5\n  grit delete --name url")]
    Delete {
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        hash: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Keep only the newest N resources of each name
    #[command(
        after_help = "Examples:\n  grit prune --keep 3 --dry-run\n  grit prune --keep 1 --name snapshot"
    )]
    Prune {
        #[arg(long)]
        keep: u64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Check the store: the database, every object's presence, size, SHA-256 and permissions
    #[command(
        after_help = "Examples:\n  grit verify --db ./db\n  grit verify --repair\n  grit verify --json | jq '.report.corrupt'\n\nWith --repair: permissions are fixed, damaged objects move to <db>/quarantine/, lost or damaged \
derived objects are re-created by re-running the tasks that produced them (with the last run's manifest), and \
lost source or ingested data is listed with the steps that depend on it.\n\nExit status: 0 clean, 4 problems remain, 2 not a grit store, 3 store locked (with --repair)."
    )]
    Verify {
        /// Fix what can be fixed (see below)
        #[arg(long)]
        repair: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// With --repair: re-run tasks without the sandbox
        #[arg(long)]
        no_sandbox: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Copy the store to DEST: a consistent snapshot of the database (safe while a run writes)
    /// and every object it refers to, each verified
    #[command(
        after_help = "Examples:\n  grit backup /backup/grit-$(date +%F) --db ./db\n  grit backup ./db.copy --link   # hard links on the same filesystem\n\nRestore: stop runs, move the copy into place (or point --db at it), then `grit verify`.\n\nExit status: 0 ok, 2 DEST is not empty, 4 an object of the store is damaged (not copied)."
    )]
    Backup {
        /// A new or empty directory
        dest: PathBuf,
        /// Hard-link objects instead of copying them (same filesystem only; a link shares the
        /// file, so it does not protect against damage to it)
        #[arg(long)]
        link: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Report what this machine offers the sandbox and the capture: landlock, user namespaces,
    /// /dev/fuse, cgroup v2; with --db, also whether the store is open to other users
    #[command(
        after_help = "Examples:\n  grit doctor\n  grit doctor --json | jq .landlock_abi\n  grit doctor --db /var/lib/grit/db   # lists paths others can read, and the chmod commands"
    )]
    Doctor {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Also check this store's permissions (nothing is changed)
        #[arg(long, value_name = "DIR")]
        db: Option<PathBuf>,
    },
    /// Serve pipelines as a long-running service with an authenticated HTTP API
    #[command(
        after_help = "Examples:\n  grit serve --config /etc/grit/server.toml\n  grit serve -m pipeline.toml --db ./db                 # one pipeline on 127.0.0.1:9009\n  grit serve -m pipeline.toml --db ./db --listen 127.0.0.1:8080\n  grit serve -m pipeline.toml --db ./db --listen unix:/run/grit/api.sock\n  curl -s http://127.0.0.1:9009/api/v1/openapi.json     # the API, OpenAPI 3.1 (no token needed)\n\nThe first line on stderr says where it listens. The server holds each pipeline's store lock while it runs. SIGTERM/SIGINT: stop accepting requests, let the running run finish for shutdown_timeout, then cancel it (it resumes at the next start; a run on Slurm is cancelled at once, its jobs with it); exit 0. SIGHUP: reload the config file.\n\nExit status: 0 stopped on request, 2 usage or config error (also a token secret file under 16 bytes), 3 a store is locked, 5 environment error (the socket or a file cannot be opened)."
    )]
    Serve(ServeArgs),
    /// Print a token (JWT) for the API of `grit serve`
    #[command(
        after_help = "Examples:\n  grit token --role operator --ttl 1h --config /etc/grit/server.toml\n  grit token --role viewer --db ./db          # the secret of `grit serve -m M --db ./db`\n  curl -H \"Authorization: Bearer $(grit token --role viewer --db ./db)\" http://127.0.0.1:9009/api/v1/runs"
    )]
    Token(TokenArgs),
    /// Queue a run on a `grit serve` server, and with --wait follow it to its end
    #[command(
        after_help = "Examples:\n  grit trigger etl --token-file ~/.grit-token\n  GRIT_TOKEN=$(grit token --role operator --db ./db) grit trigger etl --wait\n  grit trigger etl --param region=us --server http://10.0.0.5:9009 --json\n\nExit status: 0 queued (with --wait: the run succeeded), 1 the run failed or was cancelled (or the queue is full), 2 usage error or the server refused the request (token, unknown pipeline), 5 the server cannot be reached."
    )]
    Trigger(TriggerArgs),
    /// List the runs of a `grit serve` server, newest first
    #[command(
        after_help = "Examples:\n  grit runs\n  grit runs --pipeline etl --status failed --limit 10\n  grit runs --json | jq '.runs[].run_id'"
    )]
    Runs(RunsArgs),
    /// Print shell completions
    #[command(after_help = "Example:\n  grit completions bash > /etc/bash_completion.d/grit")]
    Completions { shell: Shell },
    /// Print the man page (roff)
    #[command(after_help = "Example:\n  grit man > grit.1 && man ./grit.1")]
    Man,
    /// The job side of `--executor slurm`: run one array element's group of tasks
    #[command(name = "slurm-worker", hide = true)]
    SlurmWorker {
        /// The batch file the submitting grit wrote under <db>/slurm/batch/
        batch: PathBuf,
        /// The array element (SLURM_ARRAY_TASK_ID)
        element: usize,
    },
    /// GRIT compatibility: print the live hashes of NAME, one a line
    #[command(hide = true)]
    LegacyExport {
        name: String,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The manifest [default: grit.toml in the current directory or its parents]
    #[arg(short, long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub group: GroupArg,
    /// Tasks run at the same time (default: number of CPUs)
    #[arg(short = 'j', long = "parallel", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Only let these steps run this time (repeatable)
    #[arg(long = "step", value_name = "NAME")]
    pub steps: Vec<String>,
    /// Start at most N tasks in this run
    #[arg(long, value_name = "N")]
    pub max_tasks: Option<u64>,
    #[command(flatten)]
    pub verbosity: Verbosity,
    /// Print a JSON summary on stdout at the end
    #[arg(long)]
    pub json: bool,
    /// Run tasks without the sandbox (same as sandbox = "off" on every step)
    #[arg(long)]
    pub no_sandbox: bool,
    /// How outputs are captured
    #[arg(long, value_enum, default_value = "auto")]
    pub capture: CaptureMode,
    /// Where tasks run [default: the manifest's `[executor] kind`, else local]
    #[arg(long, value_enum, value_name = "KIND")]
    pub executor: Option<ExecutorArg>,
    /// Log output format
    #[arg(long, value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    /// Say what would run and why, without running anything or changing the store
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    // --- data semantics (issue 19 item 2) ---
    /// Run every current task of this step again, like `make -B` (repeatable); steps downstream
    /// run only where its outputs change
    #[arg(long = "force-step", value_name = "NAME")]
    pub force_steps: Vec<String>,
    // --- end data semantics ---
    /// task-pipeline manifests ([[step]] tables routed by file name): start from this step
    /// instead of the one with `start = true` (task-pipeline's `-start NAME`)
    #[arg(long, value_name = "STEP")]
    pub start: Option<String>,
    /// First list the steps whose definition changed and how many tasks each will redo, then
    /// run (task-pipeline's `-migrate-tainted`; grit's versioning re-runs them anyway)
    #[arg(long)]
    pub migrate_tainted: bool,
    /// Give a run parameter declared in [pipeline.params] a value for this run (repeatable);
    /// its steps see it as GRIT_PARAM_<NAME>
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = param_assignment)]
    pub params: Vec<String>,
}

/// `--param NAME=VALUE`: the syntax is checked here, the name against the manifest later.
fn param_assignment(arg: &str) -> Result<String, String> {
    crate::manifest::params::parse_assignment(arg)
        .map(|_| arg.to_string())
        .map_err(|_| "expected NAME=VALUE, e.g. --param region=us".to_string())
}

/// GRIT's flags, which take a value unless listed in [`LEGACY_SWITCHES`].
const LEGACY_VALUED: &[&str] = &[
    "manifest",
    "db",
    "parallel",
    "step",
    "export",
    "export-hash",
    "start",
];
const LEGACY_SWITCHES: &[&str] = &["run", "verbose", "quiet", "migrate-tainted"];

/// Translate GRIT's `grit -manifest F -db D -run …` spelling; other argument lists pass through.
///
/// Returns an error message for a GRIT-style command line that cannot be understood.
pub fn translate_legacy(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    let is_legacy = |arg: &str| {
        let flag = arg.trim_start_matches('-');
        let flag = flag.split('=').next().unwrap_or(flag);
        arg.starts_with('-') && (LEGACY_VALUED.contains(&flag) || LEGACY_SWITCHES.contains(&flag))
    };
    // Only single-dash GRIT flags switch on the translation; `--db` before a subcommand is not GRIT.
    if !(first.starts_with('-') && !first.starts_with("--") && is_legacy(first)) {
        return Ok(args);
    }
    let mut values: Vec<(String, Option<String>)> = Vec::new();
    let mut iter = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = iter.next() {
        if !is_legacy(&arg) {
            return Err(format!(
                "unexpected argument '{arg}' in a GRIT-style command line"
            ));
        }
        let body = arg.trim_start_matches('-');
        let (flag, inline) = match body.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        if LEGACY_VALUED.contains(&flag.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => iter
                    .next()
                    .ok_or_else(|| format!("-{flag} needs a value"))?,
            };
            values.push((flag, Some(value)));
        } else {
            values.push((flag, inline));
        }
    }
    let get = |name: &str| {
        values
            .iter()
            .find(|(f, _)| f == name)
            .and_then(|(_, v)| v.clone())
    };
    let has = |name: &str| {
        values
            .iter()
            .any(|(f, v)| f == name && v.as_deref() != Some("false"))
    };
    let mut out: Vec<OsString> = vec![args[0].clone()];
    // GRIT's store was `./db` unless `-db` said otherwise; `$GRIT_DB` is grit's and still wins.
    let db = get("db").or_else(|| std::env::var_os("GRIT_DB").is_none().then(|| "db".into()));
    let push_db = |out: &mut Vec<OsString>| {
        if let Some(db) = &db {
            out.push("--db".into());
            out.push(db.into());
        }
    };
    if let Some(hash) = get("export-hash") {
        out.extend(["cat".into(), hash.into()]);
        push_db(&mut out);
    } else if let Some(name) = get("export") {
        out.extend(["legacy-export".into(), name.into()]);
        push_db(&mut out);
    } else if has("run") || get("manifest").is_some() {
        if !has("run") {
            // task-pipeline's first form ran the pipeline without `-run`.
            eprintln!(
                "note: no -run, -export or -export-hash given: running the pipeline, as task-pipeline did"
            );
        }
        out.push("run".into());
        let manifest = get("manifest").ok_or("-run needs -manifest FILE")?;
        out.extend(["--manifest".into(), manifest.into()]);
        push_db(&mut out);
        if let Some(n) = get("parallel") {
            out.extend(["--parallel".into(), n.into()]);
        }
        for (flag, value) in &values {
            if flag == "step"
                && let Some(v) = value
            {
                out.extend(["--step".into(), v.into()]);
            }
        }
        if let Some(start) = get("start") {
            out.extend(["--start".into(), start.into()]);
        }
        if has("migrate-tainted") {
            out.push("--migrate-tainted".into());
        }
        if has("verbose") {
            out.push("--verbose".into());
        }
        if has("quiet") {
            out.push("--quiet".into());
        }
    } else {
        return Err(
            "a GRIT-style command line needs -run, -export NAME or -export-hash HASH".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> Result<Vec<String>, String> {
        translate_legacy(args.iter().map(OsString::from).collect()).map(|v| {
            v.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn translates_grit_run() {
        assert_eq!(
            t(&[
                "grit",
                "-manifest",
                "m.toml",
                "-db",
                "d",
                "-run",
                "-parallel",
                "3",
                "-step",
                "a",
                "-step=b",
                "-verbose"
            ])
            .unwrap(),
            [
                "grit",
                "run",
                "--manifest",
                "m.toml",
                "--db",
                "d",
                "--parallel",
                "3",
                "--step",
                "a",
                "--step",
                "b",
                "--verbose"
            ]
        );
        assert_eq!(
            t(&["grit", "--manifest=m.toml", "-run"]).unwrap_or_default(),
            ["grit", "--manifest=m.toml", "-run"],
            "a double-dash first flag is not GRIT spelling"
        );
    }

    #[test]
    fn translates_grit_exports() {
        assert_eq!(
            t(&["grit", "-manifest", "m", "-db", "d", "-export", "done"]).unwrap(),
            ["grit", "legacy-export", "done", "--db", "d"]
        );
        assert_eq!(
            t(&["grit", "-db", "d", "-export-hash", "abc"]).unwrap(),
            ["grit", "cat", "abc", "--db", "d"]
        );
        assert!(t(&["grit", "-db", "d"]).is_err());
        assert!(
            t(&["grit", "-db", "d", "-run"])
                .unwrap_err()
                .contains("-manifest")
        );
    }

    #[test]
    fn translates_task_pipeline_flags_and_an_implied_run() {
        assert_eq!(
            t(&[
                "task-pipeline",
                "-manifest",
                "m.toml",
                "--db",
                "./db",
                "-start",
                "process",
                "-migrate-tainted"
            ])
            .unwrap(),
            [
                "task-pipeline",
                "run",
                "--manifest",
                "m.toml",
                "--db",
                "./db",
                "--start",
                "process",
                "--migrate-tainted"
            ]
        );
    }

    #[test]
    fn grit_spelling_keeps_its_default_store() {
        if std::env::var_os("GRIT_DB").is_some() {
            return;
        }
        assert_eq!(
            t(&["grit", "-manifest", "m.toml", "-run"]).unwrap(),
            ["grit", "run", "--manifest", "m.toml", "--db", "db"]
        );
    }

    #[test]
    fn modern_spelling_passes_through() {
        assert_eq!(
            t(&["grit", "run", "-m", "x"]).unwrap(),
            ["grit", "run", "-m", "x"]
        );
        assert_eq!(t(&["grit", "-V"]).unwrap(), ["grit", "-V"]);
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The server config (TOML): listen address, token secret, pipelines
    #[arg(long, value_name = "FILE", conflicts_with_all = ["manifest", "db"], required_unless_present = "manifest")]
    pub config: Option<PathBuf>,
    /// One pipeline: its manifest (needs --db)
    #[arg(short, long, value_name = "FILE", requires = "db")]
    pub manifest: Option<PathBuf>,
    /// One pipeline: its store
    #[arg(long, value_name = "DIR", requires = "manifest")]
    pub db: Option<PathBuf>,
    /// Where to listen: HOST:PORT or unix:/PATH [default: 127.0.0.1:9009]
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub listen: Option<String>,
    /// The HS256 secret of the tokens; created (0600, 32 random bytes) when missing
    /// [default: DB/token-secret]
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub token_secret_file: Option<PathBuf>,
    /// Run tasks without the sandbox (as `grit run --no-sandbox`)
    #[arg(long, conflicts_with = "config")]
    pub no_sandbox: bool,
    /// Log output format
    #[arg(long, value_enum, default_value = "auto")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("secret").required(true)))]
pub struct TokenArgs {
    /// What the token allows: viewer (reads) or operator (also triggers and cancels)
    #[arg(long, value_enum)]
    pub role: crate::serve::auth::Role,
    /// How long the token is valid (e.g. 30m, 1h, 7d)
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Sign with the secret named by this server config
    #[arg(long, value_name = "FILE", group = "secret")]
    pub config: Option<PathBuf>,
    /// Sign with this secret file (created when missing)
    #[arg(long, value_name = "FILE", group = "secret")]
    pub token_secret_file: Option<PathBuf>,
    /// Sign with the secret of `grit serve -m M --db DIR` (DIR/token-secret)
    #[arg(long, value_name = "DIR", group = "secret")]
    pub db: Option<PathBuf>,
}

/// Where a client finds the server and its token.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server's address
    #[arg(
        long,
        env = "GRIT_SERVER",
        default_value = "http://127.0.0.1:9009",
        value_name = "URL"
    )]
    pub server: String,
    /// A file holding the token ($GRIT_TOKEN may hold the token itself)
    #[arg(long, env = "GRIT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TriggerArgs {
    /// The pipeline, as the server's config names it
    pub pipeline: String,
    /// A parameter value for this run, NAME=VALUE (repeatable)
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Follow the run to its end, printing progress; exit 0 when it succeeded, 1 when it failed
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's answer (with --wait: the finished run) as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunsArgs {
    /// Only this pipeline's runs
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Only runs in this state: queued, running, succeeded, failed, cancelled, interrupted
    #[arg(long, value_name = "STATE")]
    pub status: Option<String>,
    /// At most this many runs
    #[arg(long, default_value = "20", value_name = "N")]
    pub limit: usize,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}
