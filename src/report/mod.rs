//! Reporting: logging setup, the end-of-run summary, and error printing. It subscribes to engine
//! events and formats results; it never drives the engine.

pub mod logging;
pub mod summary;

/// Print an error and its causes to stderr, `error: top` then `  caused by: …`.
pub fn print_error(error: &anyhow::Error) {
    // Manifest errors are already complete compiler-style messages: `FILE:LINE:COL: error: …`.
    if let Some(manifest) = error.downcast_ref::<crate::manifest::ManifestError>() {
        eprintln!("{manifest}");
        return;
    }
    let mut text = format!("error: {error}");
    for cause in error.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    eprintln!("{text}");
}
