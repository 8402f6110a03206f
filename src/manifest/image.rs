//! The `image` key of a step: finding the image it names (relative to the manifest's directory)
//! and identifying it, with located errors. The image module does the work.

use std::path::Path;

use super::SandboxMode;
use super::error::ManifestError;
use super::parse::Ctx;
use crate::image::{Image, ImageError};

/// Identifies the image `spec` of step `step`, written at offset `at`.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    dir: &Path,
    step: &str,
    spec: &str,
    at: usize,
    sandbox: Option<SandboxMode>,
) -> Result<Image, ManifestError> {
    if sandbox == Some(SandboxMode::Off) {
        return Err(ctx.err(
            at,
            format!("step `{step}` has an `image` but `sandbox = \"off\"`"),
            Some(
                "an image is the root of the step's sandbox: remove `sandbox = \"off\"`, or \
                 remove `image` to run on the host"
                    .into(),
            ),
        ));
    }
    if spec.trim().is_empty() || spec.contains('\0') {
        return Err(ctx.err(
            at,
            format!("step `{step}`: `image` is empty"),
            Some("name a root filesystem directory, an OCI layout or a `docker save` .tar, e.g. image = \"images/debian-rootfs\"".into()),
        ));
    }
    let path = dir.join(spec);
    Image::identify(&path).map_err(|e| {
        let help = match &e {
            ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "the path is relative to the manifest's directory; build or save the image there \
                 first (e.g. `docker save IMAGE -o image.tar`)"
            }
            _ => {
                "`image` takes a root filesystem directory, an OCI image layout directory, or a \
                 `docker save` .tar archive"
            }
        };
        ctx.err(at, format!("step `{step}`: image {e}"), Some(help.into()))
    })
}

/// The shell recorded for an image step that names none: bash in strict mode, which the
/// executor replaces by `sh -ec` when the image has no bash (see [`Image::shell`]).
pub(super) fn default_shell(image: &mut Image) -> Vec<String> {
    image.choose_shell = true;
    super::STRICT_SHELL.iter().map(|s| s.to_string()).collect()
}
