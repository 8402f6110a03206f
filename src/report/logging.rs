//! Logging through `tracing`: human text on stderr (coloured on a terminal unless `NO_COLOR`), JSON
//! lines for machines, or journald with structured fields under systemd. `-v` shows task-level
//! detail and the scripts' output (its control characters escaped, see [`super::escape`]), `-q`
//! only errors. `GRIT_LOG` (an `EnvFilter` directive) overrides the level.
//!
//! Targets: `grit::events` carries the per-task records the run's observer emits (shown on a
//! terminal only with `-v`, except failures), `grit::script` the scripts' output lines.

use std::io::IsTerminal;
use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::escape::printable_text;
use super::journald;
use super::progress::{Progress, StderrWriter};
use super::summary::QuietLine;
use crate::cli::LogFormat;
use crate::executor::{LineSink, Stream, TaskSpec};

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

/// Where log records go, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Journald,
}

/// The installed logging of a command, and what the rest of the run needs from it.
pub struct Logging {
    pub output: Output,
    pub level: Level,
    /// Colour on stderr (a terminal, and no `NO_COLOR`).
    pub color: bool,
    /// The progress bars, when stderr is a terminal, the output is text and not `-q`.
    pub progress: Option<Arc<Progress>>,
    writer: StderrWriter,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Choose the output for `format`: `auto` is journald when stderr is the journal stream.
pub fn resolve(format: LogFormat) -> Output {
    match format {
        LogFormat::Auto if journald::connected_to_journal() => Output::Journald,
        LogFormat::Auto | LogFormat::Text => Output::Text,
        LogFormat::Json => Output::Json,
        LogFormat::Journald => Output::Journald,
    }
}

/// Install the global subscriber. `pipeline` names the pipeline in journald records; `bars` asks
/// for progress bars (they still appear only on a terminal with text output).
pub fn init(level: Level, format: LogFormat, pipeline: &str, bars: bool) -> Logging {
    let mut output = resolve(format);
    let mut journald_layer = None;
    let mut fallback_note = None;
    if output == Output::Journald {
        match journald::layer(pipeline) {
            Ok(layer) => journald_layer = Some(layer),
            Err(e) => {
                fallback_note = Some(format!(
                    "journald is not reachable ({e}); logging to stderr as text"
                ));
                output = Output::Text;
            }
        }
    }
    let color = output == Output::Text && color_wanted();
    let progress = (bars
        && output == Output::Text
        && level != Level::Quiet
        && std::io::stderr().is_terminal())
    .then(|| Arc::new(Progress::stderr(color)));
    let writer = StderrWriter::new(progress.as_ref().map(|p| p.multi()));

    let layer: BoxedLayer = match (output, journald_layer) {
        (Output::Journald, Some(layer)) => layer.with_filter(filter(output, level)).boxed(),
        (Output::Json, _) => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer.clone())
            .with_filter(filter(output, level))
            .boxed(),
        _ => tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .with_ansi(color)
            .with_target(false)
            .without_time()
            .fmt_fields(text_fields())
            .with_filter(filter(Output::Text, level))
            .boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
    if let Some(note) = fallback_note {
        tracing::warn!("{note}");
    }
    Logging {
        output,
        level,
        color,
        progress,
        writer,
    }
}

/// The filter of each output. Text keeps a terminal readable: per-task records only with `-v`
/// (failures are warnings and always shown) and script lines through [`Logging::line_sink`]
/// instead. JSON and journald carry script lines as records.
fn filter(output: Output, level: Level) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_env("GRIT_LOG") {
        return filter;
    }
    let directives = match (output, level) {
        (_, Level::Quiet) => "grit=error",
        (Output::Text, Level::Normal) => "grit=info,grit::events=warn,grit::script=off",
        (Output::Text, Level::Verbose) => "grit=debug,grit::script=off",
        (Output::Json, Level::Normal) => "grit=info,grit::events=warn,grit::script=off",
        (Output::Json, Level::Verbose) => "grit=debug,grit::script=trace",
        (Output::Journald, Level::Normal) => "grit=info,grit::script=trace",
        (Output::Journald, Level::Verbose) => "grit=debug,grit::script=trace",
    };
    EnvFilter::new(directives)
}

/// Text fields: the message and ordinary fields, without the `grit_*` fields that exist for
/// journald and JSON (the message already says which step and task).
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let name = field.name();
        if name == "message" {
            write!(writer, "{value:?}")
        } else if name.starts_with("grit_") {
            Ok(())
        } else {
            write!(writer, " {name}={value:?}")
        }
    })
}

impl Logging {
    /// Where the scripts' output lines go while they run, if anywhere: printed as `step#task| line`
    /// with `-v` on a terminal, or as records in JSON (`-v`) and journald (unless `-q`).
    pub fn line_sink(&self) -> Option<LineSink> {
        match (self.output, self.level) {
            (_, Level::Quiet) | (Output::Json, Level::Normal) | (Output::Text, Level::Normal) => {
                None
            }
            (Output::Text, Level::Verbose) => {
                let writer = self.writer.clone();
                let (dim, red, reset) = if self.color {
                    ("\x1b[2m", "\x1b[31m", "\x1b[0m")
                } else {
                    ("", "", "")
                };
                Some(
                    Arc::new(move |spec: &TaskSpec, stream: Stream, line: &str| {
                        let bar = match stream {
                            Stream::Stdout => format!("{dim}|{reset}"),
                            Stream::Stderr => format!("{red}!{reset}"),
                        };
                        writer.write_str(&format!(
                            "  {dim}{}#{}{reset}{bar} {}\n",
                            spec.step.name,
                            spec.task_id,
                            printable_text(line)
                        ));
                    }) as LineSink,
                )
            }
            (Output::Json | Output::Journald, _) => {
                Some(Arc::new(journald::emit_script_line) as LineSink)
            }
        }
    }

    /// Print the run summary on stderr; with JSON or journald output it becomes one record of
    /// the run instead, so that stream stays machine-readable.
    pub fn print_summary(&self, run_id: i64, text: &str) {
        if self.output != Output::Text {
            tracing::info!(grit_run = run_id, "{}", text.trim_end());
        } else {
            self.writer.write_str(text);
        }
    }

    /// Print what `-q` keeps of the summary (see [`super::summary::quiet_lines`]): plain lines on
    /// stderr for text, error records (which pass the quiet filter) for JSON and journald.
    pub fn print_quiet(&self, run_id: i64, lines: &[QuietLine]) {
        for line in lines {
            if self.output == Output::Text {
                self.writer.write_str(&format!("{}\n", line.text));
            } else {
                tracing::error!(
                    grit_run = run_id,
                    grit_step = line.step.as_deref(),
                    grit_task = line.task,
                    "{}",
                    line.text
                );
            }
        }
    }

    /// Clear the progress bars, so what follows (the summary) prints on a clean terminal.
    pub fn finish_progress(&self) {
        if let Some(progress) = &self.progress {
            progress.finish();
        }
    }
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
pub fn color_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_formats_resolve_to_themselves() {
        assert_eq!(resolve(LogFormat::Text), Output::Text);
        assert_eq!(resolve(LogFormat::Json), Output::Json);
        assert_eq!(resolve(LogFormat::Journald), Output::Journald);
    }
}
