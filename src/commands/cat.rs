//! `grit cat`: stream an object's content to stdout, chosen by hash or by name ([`select`]).

use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use super::select;
use crate::report::stdout;
use crate::store::{self, Objects};

pub fn cat(db: &Path, hash: &str) -> anyhow::Result<Outcome> {
    let (paths, conn) = store::open_read(db)?;
    let full = select::one(&conn, hash)?;
    let path = Objects::new(paths.objects).path(&full);
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("opening object {}", path.display()))?;
    let mut stdout = stdout::stdout();
    std::io::copy(&mut file, &mut stdout).context("writing to stdout")?;
    Ok(Outcome::Success)
}
