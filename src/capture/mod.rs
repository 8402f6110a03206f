//! Output capture: how the files a task leaves in its `OUTPUT_DIR` become staged, hashed content.
//! (Minimal version on the `fuse` branch; the lead owns the real module with the plain-directory capture.)

use std::path::PathBuf;

pub mod fuse;

/// One file a task left in its OUTPUT_DIR, hashed and staged for publishing.
pub struct CapturedFile {
    pub name: String, // the flat file name = the resource name
    pub hash: String, // lowercase hex SHA-256 of the final content
    pub size: u64,
    pub staged: PathBuf, // a file under <db>/tmp holding exactly that content; the store renames it into objects/ (same filesystem) or deletes it if the object exists
}
