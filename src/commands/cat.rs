//! `grit cat`: print an object's content to stdout, chosen by hash or by name ([`select`]), only
//! once it is known to be intact.
//!
//! Bytes on a pipe cannot be taken back, so `cat` never prints bytes it has not verified: objects
//! up to [`BUFFERED_MAX`] are read and checked in memory, then printed (one read); larger ones are
//! verified in a first pass and then streamed by a second verified reader, which stops with the
//! same error should the file change between the passes (two reads; the second usually comes from
//! the page cache).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use super::select;
use crate::report::escape::printable;
use crate::report::stdout;
use crate::store::{self, Objects, VerifiedReader, queries};

/// Largest object printed from memory after one verified read.
const BUFFERED_MAX: u64 = 64 * 1024 * 1024;

pub fn cat(db: &Path, hash: &str) -> anyhow::Result<Outcome> {
    let (paths, conn) = store::open_read(db)?;
    let full = select::one(&conn, hash)?;
    let queries::ObjectIdentity { what, size, .. } = queries::object_identity(&conn, &full)?;
    // `resource <name>`, quoted by the error should the object be damaged.
    let what = printable(&what);
    let objects = Objects::new(paths.objects);
    let open = || VerifiedReader::open(&objects, &full, size, &what);
    let mut stdout = stdout::stdout();
    let on_disk = std::fs::metadata(objects.path(&full)).map(|m| m.len()).ok();
    if size.or(on_disk).is_some_and(|n| n <= BUFFERED_MAX) {
        let content = open()?.read_verified()?;
        stdout.write_all(&content).context("writing to stdout")?;
    } else {
        open()?.verify()?;
        let mut reader = open()?;
        std::io::copy(&mut reader, &mut stdout).map_err(|e| {
            match e.downcast::<store::ObjectError>() {
                Ok(damage) => anyhow::Error::from(damage),
                Err(e) => anyhow::Error::from(e).context("writing to stdout"),
            }
        })?;
    }
    stdout.flush().context("writing to stdout")?;
    Ok(Outcome::Success)
}
