//! The server's configuration: the TOML file of `grit serve --config`, or the one pipeline of
//! `grit serve -m M --db D`. Parsing validates every key (unknown ones are errors located at
//! `file:line:col`), resolves relative paths against the config file's directory, and applies the
//! defaults documented in the README ("Run it as a service").

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::commands::exit::UsageError;
use crate::manifest::Position;

/// Where the API listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9009";
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_QUEUE_LIMIT: usize = 10;
/// The secret's file name inside the store in the one-pipeline (flag) mode.
pub const STORE_SECRET_FILE: &str = "token-secret";

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `HOST:PORT`, as written (resolved when binding).
    Tcp(String),
    /// `unix:/path/to/socket`.
    Unix(PathBuf),
}

impl Listen {
    pub fn parse(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{text}`: a unix socket needs an absolute path (unix:/run/grit/api.sock)"
                ));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        match text.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(_)) => Ok(Listen::Tcp(text.to_string())),
            _ => Err(format!(
                "`{text}` is not HOST:PORT (e.g. 127.0.0.1:9009) or unix:/PATH"
            )),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What a trigger does when runs are already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueStrategy {
    /// Wait behind them (up to `queue_limit`).
    Append,
    /// Replace them: the waiting runs are cancelled; the running one is never touched.
    Replace,
}

/// One pipeline the server runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub name: String,
    pub manifest: PathBuf,
    pub db: PathBuf,
    pub group: Option<String>,
    pub jobs: Option<usize>,
    pub queue_limit: usize,
    pub queue_strategy: QueueStrategy,
    pub start_delay: Duration,
    pub schedule: Vec<String>,
    pub watch: Vec<PathBuf>,
    pub keep_runs: Option<u64>,
    pub keep_days: Option<u64>,
    pub params: BTreeMap<String, String>,
    pub no_sandbox: bool,
}

impl PipelineConfig {
    /// A pipeline with every optional key at its default.
    pub fn new(name: String, manifest: PathBuf, db: PathBuf) -> PipelineConfig {
        PipelineConfig {
            name,
            manifest,
            db,
            group: None,
            jobs: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            queue_strategy: QueueStrategy::Append,
            start_delay: Duration::ZERO,
            schedule: Vec::new(),
            watch: Vec::new(),
            keep_runs: None,
            keep_days: None,
            params: BTreeMap::new(),
            no_sandbox: false,
        }
    }
}

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The file it was read from (`None` in flag mode): what SIGHUP reloads.
    pub source: Option<PathBuf>,
    pub listen: Listen,
    pub token_secret_file: PathBuf,
    pub shutdown_timeout: Duration,
    pub request_timeout: Duration,
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    token_secret_file: Option<Spanned<String>>,
    shutdown_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pipelines: BTreeMap<Spanned<String>, RawPipeline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    manifest: Spanned<String>,
    db: Spanned<String>,
    group: Option<String>,
    jobs: Option<Spanned<u32>>,
    queue_limit: Option<Spanned<u64>>,
    queue_strategy: Option<Spanned<String>>,
    start_delay: Option<Spanned<String>>,
    #[serde(default)]
    schedule: Vec<Spanned<String>>,
    #[serde(default)]
    watch: Vec<Spanned<String>>,
    keep_runs: Option<u64>,
    keep_days: Option<u64>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    no_sandbox: bool,
}

/// A located mistake in the config file.
struct Located {
    span: Range<usize>,
    message: String,
}

fn located(span: Range<usize>, message: impl Into<String>) -> Located {
    Located {
        span,
        message: message.into(),
    }
}

impl ServerConfig {
    /// Read and validate a config file. Errors are usage errors (exit 2) naming `file:line:col`.
    pub fn load(path: &Path) -> anyhow::Result<ServerConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("{}: cannot read the config: {e}", path.display())))?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        Self::parse(&text, path, &base).map_err(|e| {
            let at = Position::of(&text, e.span.start);
            UsageError(format!(
                "{}:{}:{}: {}",
                path.display(),
                at.line,
                at.column,
                e.message
            ))
            .into()
        })
    }

    fn parse(text: &str, path: &Path, base: &Path) -> Result<ServerConfig, Located> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| located(e.span().unwrap_or(0..0), e.message().trim_end().to_string()))?;
        let resolve = |p: &str| base.join(p);
        let listen = match raw.listen {
            Some(l) => Listen::parse(l.get_ref()).map_err(|m| located(l.span(), m))?,
            None => Listen::parse(DEFAULT_LISTEN).map_err(|m| located(0..0, m))?,
        };
        let mut pipelines = BTreeMap::new();
        for (name, p) in raw.pipelines {
            let span = name.span();
            let name = name.into_inner();
            check_name(&name).map_err(|m| located(span.clone(), m))?;
            let mut config = PipelineConfig::new(
                name.clone(),
                resolve(p.manifest.get_ref()),
                resolve(p.db.get_ref()),
            );
            config.group = p.group;
            if let Some(jobs) = p.jobs {
                if *jobs.get_ref() == 0 {
                    return Err(located(jobs.span(), "jobs must be at least 1"));
                }
                config.jobs = Some(*jobs.get_ref() as usize);
            }
            if let Some(limit) = p.queue_limit {
                if *limit.get_ref() == 0 {
                    return Err(located(limit.span(), "queue_limit must be at least 1"));
                }
                config.queue_limit = *limit.get_ref() as usize;
            }
            if let Some(strategy) = p.queue_strategy {
                config.queue_strategy = match strategy.get_ref().as_str() {
                    "append" => QueueStrategy::Append,
                    "replace" => QueueStrategy::Replace,
                    other => {
                        return Err(located(
                            strategy.span(),
                            format!("queue_strategy `{other}`: use \"append\" or \"replace\""),
                        ));
                    }
                };
            }
            if let Some(delay) = p.start_delay {
                config.start_delay = duration(&delay)?;
            }
            for entry in &p.schedule {
                super::schedule::Every::parse(entry.get_ref())
                    .map_err(|m| located(entry.span(), m))?;
                config.schedule.push(entry.get_ref().clone());
            }
            for entry in &p.watch {
                let path = resolve(entry.get_ref());
                if !path.exists() {
                    return Err(located(
                        entry.span(),
                        format!("watch: {} does not exist", path.display()),
                    ));
                }
                config.watch.push(path);
            }
            config.keep_runs = p.keep_runs;
            config.keep_days = p.keep_days;
            config.params = p.params;
            config.no_sandbox = p.no_sandbox;
            pipelines.insert(name, config);
        }
        if pipelines.is_empty() {
            return Err(located(
                0..0,
                "no pipelines: add a [pipelines.NAME] table with `manifest` and `db`",
            ));
        }
        // Each pipeline holds its store's lock while the server runs.
        let mut stores: BTreeMap<&Path, &str> = BTreeMap::new();
        for p in pipelines.values() {
            if let Some(other) = stores.insert(&p.db, &p.name) {
                return Err(located(
                    0..0,
                    format!(
                        "pipelines {other} and {} use the same db {}: give each pipeline a store of its own",
                        p.name,
                        p.db.display()
                    ),
                ));
            }
        }
        let secret = match raw.token_secret_file {
            Some(f) => resolve(f.get_ref()),
            None => resolve("token-secret"),
        };
        Ok(ServerConfig {
            source: Some(path.to_path_buf()),
            listen,
            token_secret_file: secret,
            shutdown_timeout: match raw.shutdown_timeout {
                Some(d) => duration(&d)?,
                None => DEFAULT_SHUTDOWN_TIMEOUT,
            },
            request_timeout: match raw.request_timeout {
                Some(d) => duration(&d)?,
                None => DEFAULT_REQUEST_TIMEOUT,
            },
            pipelines,
        })
    }

    /// The one-pipeline config of `grit serve -m M --db D`: the pipeline is named after
    /// `[pipeline] name` or the manifest's file stem, the secret lives in the store.
    pub fn single(
        name: String,
        manifest: PathBuf,
        db: PathBuf,
        listen: Option<&str>,
        secret: Option<PathBuf>,
    ) -> anyhow::Result<ServerConfig> {
        check_name(&name).map_err(|m| UsageError(format!("pipeline name: {m}")))?;
        let listen = Listen::parse(listen.unwrap_or(DEFAULT_LISTEN))
            .map_err(|m| UsageError(format!("--listen {m}")))?;
        let token_secret_file = secret.unwrap_or_else(|| db.join(STORE_SECRET_FILE));
        let pipeline = PipelineConfig::new(name.clone(), manifest, db);
        Ok(ServerConfig {
            source: None,
            listen,
            token_secret_file,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            pipelines: BTreeMap::from([(name, pipeline)]),
        })
    }
}

/// Pipeline names appear in URLs and run ids (`NAME.N`): letters, digits, `_` and `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a usable pipeline name: use 1 to 64 letters, digits, `_` or `-`"
        ))
    }
}

fn duration(value: &Spanned<String>) -> Result<Duration, Located> {
    humantime::parse_duration(value.get_ref()).map_err(|e| {
        located(
            value.span(),
            format!(
                "`{}` is not a duration ({e}): write e.g. \"30s\", \"10m\", \"1h\"",
                value.get_ref()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, String> {
        ServerConfig::parse(text, Path::new("s.toml"), Path::new("/etc/grit")).map_err(|e| {
            let at = Position::of(text, e.span.start);
            format!("{}:{}: {}", at.line, at.column, e.message)
        })
    }

    #[test]
    fn defaults_and_relative_paths() {
        let config =
            parse("[pipelines.etl]\nmanifest = \"etl.toml\"\ndb = \"/var/lib/grit/etl\"\n")
                .unwrap();
        assert_eq!(config.listen, Listen::Tcp("127.0.0.1:9009".into()));
        assert_eq!(
            config.token_secret_file,
            PathBuf::from("/etc/grit/token-secret")
        );
        let etl = &config.pipelines["etl"];
        assert_eq!(etl.manifest, PathBuf::from("/etc/grit/etl.toml"));
        assert_eq!(etl.db, PathBuf::from("/var/lib/grit/etl"));
        assert_eq!(etl.queue_limit, 10);
        assert_eq!(etl.queue_strategy, QueueStrategy::Append);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_located() {
        let err =
            parse("[pipelines.etl]\nmanifest = \"m\"\ndb = \"d\"\nqueue_limt = 3\n").unwrap_err();
        assert!(err.starts_with("4:1: unknown field `queue_limt`"), "{err}");
        let err =
            parse("shutdown_timeout = \"soon\"\n[pipelines.a]\nmanifest = \"m\"\ndb = \"d\"\n")
                .unwrap_err();
        assert!(err.starts_with("1:20: `soon` is not a duration"), "{err}");
        let err = parse("[pipelines.\"a b\"]\nmanifest = \"m\"\ndb = \"d\"\n").unwrap_err();
        assert!(err.contains("not a usable pipeline name"), "{err}");
        let err = parse("listen = \"unix:run/x\"\n[pipelines.a]\nmanifest = \"m\"\ndb = \"d\"\n")
            .unwrap_err();
        assert!(err.contains("absolute path"), "{err}");
    }

    #[test]
    fn schedules_are_checked() {
        let ok = parse(
            "[pipelines.a]\nmanifest = \"m\"\ndb = \"d\"\nschedule = [\"*/15 * * * *\", \"every 10m\"]\n",
        )
        .unwrap();
        assert_eq!(ok.pipelines["a"].schedule.len(), 2);
        let err = parse(
            "[pipelines.a]\nmanifest = \"m\"\ndb = \"d\"\nschedule = [\"every 10m\", \"often\"]\n",
        )
        .unwrap_err();
        assert!(err.starts_with("4:26: `often` is neither"), "{err}");
    }

    #[test]
    fn two_pipelines_on_one_store_are_refused() {
        let err = parse(
            "[pipelines.a]\nmanifest = \"m\"\ndb = \"d\"\n[pipelines.b]\nmanifest = \"n\"\ndb = \"d\"\n",
        )
        .unwrap_err();
        assert!(err.contains("use the same db"), "{err}");
    }
}
