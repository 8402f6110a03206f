//! `grit serve`: read the server config (a file, or the one pipeline of `-m M --db D`), set up
//! logging, and hand over to [`crate::serve`].

use super::exit::{Outcome, UsageError};
use crate::cli::ServeArgs;
use crate::manifest;
use crate::report::logging::{self, Level};
use crate::serve::config::ServerConfig;

pub fn serve(args: ServeArgs) -> anyhow::Result<Outcome> {
    let config = match (&args.config, &args.manifest, &args.db) {
        (Some(file), _, _) => ServerConfig::load(file)?,
        (None, Some(manifest), Some(db)) => {
            // Named like `grit run` names it: `[pipeline] name`, else the file stem.
            let loaded = manifest::load(manifest)?;
            let name = crate::launch::pipeline_name(&loaded.manifest);
            let mut config = ServerConfig::single(
                name,
                std::path::absolute(manifest)?,
                std::path::absolute(db)?,
                args.listen.as_deref(),
                args.token_secret_file.clone(),
            )?;
            for pipeline in config.pipelines.values_mut() {
                pipeline.no_sandbox = args.no_sandbox;
            }
            config
        }
        _ => {
            return Err(UsageError(
                "give --config FILE, or -m MANIFEST --db DIR for one pipeline".into(),
            )
            .into());
        }
    };
    // The logging guard lives as long as the server.
    let _logging = logging::init(Level::Normal, args.log_format, "grit-serve", false);
    crate::serve::serve(config)?;
    Ok(Outcome::Success)
}
