//! Reporting: logging setup (text, JSON, journald), progress bars, the end-of-run summary, the
//! run's engine observer, error printing, and escaping for people what scripts named or printed
//! ([`escape`]). It subscribes to engine events and formats results; it never drives the engine.

pub mod escape;
pub mod journald;
pub mod logging;
pub mod progress;
pub mod reporter;
pub mod stdout;
pub mod summary;

/// Print an error and its causes to stderr, `error: top` then `  caused by: …`.
pub fn print_error(error: &anyhow::Error) {
    // Manifest errors are already complete compiler-style messages: `FILE:LINE:COL: error: …`.
    if let Some(manifest) = error.downcast_ref::<crate::manifest::ManifestError>() {
        eprintln!("{manifest}");
        return;
    }
    let mut text = format!("error: {error}");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        // Many errors already include their source's text (`path: Permission denied`).
        if !previous.contains(&cause) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        previous = cause;
    }
    // An error may quote a resource name or a script's words: no escape sequence reaches the
    // terminal (its own line breaks stay).
    eprintln!("{}", escape::printable_text(&text));
}
