//! journald output: detecting that stderr is connected to the journal, building the
//! tracing-journald layer with grit's field names, and sending the scripts' output lines there.
//!
//! # Fields
//!
//! Every record carries `GRIT_PIPELINE` (a constant field of the layer). Records about a run carry
//! `GRIT_RUN`; records about a task also carry `GRIT_STEP` and `GRIT_TASK`, and, when the task
//! reads one resource, `GRIT_RESOURCE` and `GRIT_HASH` (its input). A record about a published
//! output carries the *output's* `GRIT_RESOURCE` and `GRIT_HASH`, so `journalctl GRIT_HASH=…` finds
//! both the task that made a resource and the tasks that read it. A task on a Slurm cluster adds
//! `GRIT_SLURM_JOB` (its job, `123_4`) to its end's record, and each change of its job's state is
//! a record (at debug level) with `GRIT_SLURM_JOB` and `GRIT_SLURM_STATE`.
//!
//! # Priorities
//!
//! grit's own records map from the tracing level: error 3, warn 4, info 5 (notice), debug 6, trace
//! 7. Script output lines: stdout at 6 (info), stderr at 5 (notice), because scripts write progress
//! and diagnostics to stderr and only the exit status says whether the task failed (a failure is
//! recorded separately at 4). A line starting with a syslog prefix `<N>` (as sd-daemon(3) and
//! systemd's `SyslogLevelPrefix=` define it) takes priority N instead, with the prefix removed, so
//! a script can mark a line with `echo "<3>disk full" >&2`.

use std::os::fd::AsFd;

use crate::executor::{Stream, TaskInput, TaskSpec};

/// The tracing target of script output lines.
pub const SCRIPT_TARGET: &str = "grit::script";

/// Whether stderr is the journal stream systemd set up for this service: `JOURNAL_STREAM` holds
/// `<dev>:<inode>` of that stream, and only a match counts, because children whose stderr was
/// redirected inherit the variable (systemd.exec(5)).
pub fn connected_to_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    // The field types differ between platforms (u32 or u64), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    match nix::sys::stat::fstat(std::io::stderr().as_fd()) {
        Ok(stat) => stat.st_dev as u64 == dev && stat.st_ino as u64 == ino,
        Err(_) => false,
    }
}

/// Parse `JOURNAL_STREAM`'s `<device>:<inode>` (both decimal).
pub fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The journald layer: field names exactly as given (no `F_` prefix), so `grit_step` becomes
/// `GRIT_STEP`; `GRIT_PIPELINE` on every record. Fails when the journal socket is not there.
pub fn layer(pipeline: &str) -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier("grit".into())
        .with_custom_fields([("GRIT_PIPELINE", pipeline.as_bytes())]))
}

/// The level a script line is logged at (see the module doc for the priorities), and the line
/// without its `<N>` prefix.
pub fn script_line_level(stream: Stream, line: &str) -> (tracing::Level, &str) {
    let bytes = line.as_bytes();
    if bytes.len() >= 3 && bytes[0] == b'<' && bytes[2] == b'>' && bytes[1].is_ascii_digit() {
        let level = match bytes[1] - b'0' {
            0..=3 => tracing::Level::ERROR,
            4 => tracing::Level::WARN,
            5 => tracing::Level::INFO,
            6 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        };
        return (level, &line[3..]);
    }
    match stream {
        Stream::Stdout => (tracing::Level::DEBUG, line),
        Stream::Stderr => (tracing::Level::INFO, line),
    }
}

/// Log one script output line as a tracing event on [`SCRIPT_TARGET`] with its task's fields.
pub fn emit_script_line(spec: &TaskSpec, stream: Stream, line: &str) {
    let (level, text) = script_line_level(stream, line);
    let (resource, hash) = match &spec.input {
        TaskInput::File { name, hash, .. } => (Some(name.as_str()), Some(hash.as_str())),
        _ => (None, None),
    };
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    // The level must be a constant in each tracing macro, hence one arm per level.
    macro_rules! line_event {
        ($level:expr) => {
            tracing::event!(
                target: SCRIPT_TARGET,
                $level,
                grit_run = spec.run_id,
                grit_step = spec.step.name.as_str(),
                grit_task = spec.task_id,
                grit_resource = resource,
                grit_hash = hash,
                grit_stream = stream,
                "{text}"
            )
        };
    }
    match level {
        tracing::Level::ERROR => line_event!(tracing::Level::ERROR),
        tracing::Level::WARN => line_event!(tracing::Level::WARN),
        tracing::Level::INFO => line_event!(tracing::Level::INFO),
        tracing::Level::DEBUG => line_event!(tracing::Level::DEBUG),
        _ => line_event!(tracing::Level::TRACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_journal_stream() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream(" 64769:2\n"), Some((64769, 2)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("a:1"), None);
        assert_eq!(parse_journal_stream(""), None);
    }

    #[test]
    fn script_line_priorities() {
        use tracing::Level;
        assert_eq!(
            script_line_level(Stream::Stdout, "hello"),
            (Level::DEBUG, "hello")
        );
        assert_eq!(
            script_line_level(Stream::Stderr, "hello"),
            (Level::INFO, "hello")
        );
        assert_eq!(
            script_line_level(Stream::Stdout, "<3>disk full"),
            (Level::ERROR, "disk full")
        );
        assert_eq!(
            script_line_level(Stream::Stderr, "<4>careful"),
            (Level::WARN, "careful")
        );
        assert_eq!(
            script_line_level(Stream::Stderr, "<7>noise"),
            (Level::TRACE, "noise")
        );
        // Not a prefix: kept as is.
        assert_eq!(
            script_line_level(Stream::Stderr, "<a>x"),
            (Level::INFO, "<a>x")
        );
        assert_eq!(script_line_level(Stream::Stderr, "<3"), (Level::INFO, "<3"));
    }
}
