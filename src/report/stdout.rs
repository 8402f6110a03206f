//! Command output on stdout, and what happens when its reader goes away.
//!
//! `grit status | head -1` closes the pipe after one line. grit keeps SIGPIPE ignored (Rust's
//! default) instead of restoring the default action, because a signal would kill `grit run`
//! between publishing outputs and recording the end of its run and skip its clean-up (the FUSE
//! mount, staging), whereas an error unwinds normally. So every write to stdout goes through
//! [`Stdout`], which remembers an EPIPE, and `main` turns the error that follows into a quiet
//! exit 0: the reader got what it wanted. `println!` is not used for command output: it panics on
//! EPIPE (exit 101).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

/// Set once a write to stdout failed because its reader closed the pipe.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has closed the pipe (a write failed with EPIPE).
pub fn reader_gone() -> bool {
    READER_GONE.load(Ordering::Relaxed)
}

/// Locked stdout that notes EPIPE. Line-buffered like `println!`; wrap it in a `BufWriter` for
/// long listings.
pub struct Stdout(io::StdoutLock<'static>);

/// Lock stdout for command output.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

fn note(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::BrokenPipe {
        READER_GONE.store(true, Ordering::Relaxed);
    }
    error
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(note)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(note)
    }
}

/// Write `text` to stdout and flush it.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = stdout();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Write `text` and a newline to stdout.
pub fn println(text: &str) -> anyhow::Result<()> {
    let mut out = stdout();
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// `println!` for report lines whose loss does not matter to the command's outcome: a write
/// error is dropped (an EPIPE is still noted), so a reader that went away ends the output quietly
/// instead of panicking as `println!` does.
macro_rules! outln {
    ($($arg:tt)*) => {{
        let _ = $crate::report::stdout::println(&format!($($arg)*));
    }};
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_pipe_marks_the_reader_gone() {
        let _ = note(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!reader_gone());
        let _ = note(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(reader_gone());
    }
}
