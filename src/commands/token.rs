//! `grit token`: print one signed API token for `grit serve` on stdout, nothing else.

use std::path::PathBuf;

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use crate::cli::TokenArgs;
use crate::report::stdout;
use crate::serve::auth::Secret;
use crate::serve::config::{STORE_SECRET_FILE, ServerConfig};

pub fn token(args: TokenArgs) -> anyhow::Result<Outcome> {
    let secret = match (&args.config, &args.token_secret_file, &args.db) {
        (Some(config), _, _) => {
            Secret::load_or_create(&ServerConfig::load(config)?.token_secret_file)?
        }
        (_, Some(file), _) => Secret::load_or_create(file)?,
        (_, _, Some(db)) => {
            // Never created here: a file in a directory that is not a store yet would stop
            // `grit serve` from making it one.
            let file: PathBuf = db.join(STORE_SECRET_FILE);
            if !file.exists() {
                return Err(UsageError(format!(
                    "{} does not exist\n  help: start `grit serve -m MANIFEST --db {}` once (it creates the secret), or give --token-secret-file",
                    file.display(),
                    db.display()
                ))
                .into());
            }
            Secret::load(&file)?
        }
        (None, None, None) => {
            return Err(UsageError("give --config, --token-secret-file or --db".into()).into());
        }
    };
    let token = secret
        .mint(args.role, args.ttl)
        .context("signing the token")?;
    stdout::println(&token)?;
    Ok(Outcome::Success)
}
