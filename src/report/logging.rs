//! Logging through `tracing`: human text on stderr (coloured on a terminal unless `NO_COLOR`), or
//! JSON lines for machines. `-v` shows task-level detail, `-q` only errors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

/// Install the global subscriber. `GRIT_LOG` (an `EnvFilter` directive) overrides the level.
pub fn init(level: Level, format: LogFormat) {
    let default = match level {
        Level::Quiet => "error",
        Level::Normal => "info",
        Level::Verbose => "debug",
    };
    let filter = EnvFilter::try_from_env("GRIT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("grit={default}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        _ => builder.with_ansi(color_wanted()).without_time().try_init(),
    };
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
pub fn color_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
