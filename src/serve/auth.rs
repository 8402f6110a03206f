//! Who may call the API: JSON Web Tokens signed with HS256 over a secret that lives in a file.
//!
//! A token carries a [`Role`] (`viewer` reads, `operator` also triggers, cancels and deletes), an
//! expiry (`exp`), when it was issued (`iat`) and `sub = "grit-token"`. The secret file is created
//! with 32 random bytes (mode 0600) when missing; its bytes are the HMAC key as they are, and are
//! never logged.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Random bytes in a new secret file.
const SECRET_BYTES: usize = 32;
/// A secret shorter than this is refused: HS256 keys should not be guessable.
const MIN_SECRET_BYTES: usize = 16;
/// The `sub` claim of every token grit mints.
pub const SUBJECT: &str = "grit-token";
/// Clock skew accepted on `exp`, in seconds.
const LEEWAY_S: u64 = 5;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read, trigger, cancel and delete runs.
    Operator,
}

/// The claims of a grit token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub role: Role,
    pub exp: u64,
    pub iat: u64,
    pub sub: String,
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("token secret {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token secret {path} holds {len} bytes, fewer than {MIN_SECRET_BYTES}\n  help: delete it to have grit create a random one, or write at least {SECRET_BYTES} random bytes into it"
    )]
    TooShort { path: String, len: usize },
}

/// Why a request's token is refused (401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

/// The HMAC key. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Read the secret file; create it (0600, 32 random bytes) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Secret, SecretError> {
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let mut bytes = vec![0u8; SECRET_BYTES];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut r| r.read_exact(&mut bytes))
                    .map_err(io)?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| {
                        // A half-written secret would be used as is by the next start.
                        let _ = std::fs::remove_file(path);
                        io(e)
                    })?;
                tracing::info!("created a new token secret in {}", path.display());
                Ok(Secret(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io(e)),
        }
    }

    /// Read an existing secret file.
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                path: path.display().to_string(),
                len: bytes.len(),
            });
        }
        Ok(Secret(bytes))
    }

    /// A signed token for `role`, valid for `ttl` from now.
    pub fn mint(&self, role: Role, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = unix_now();
        let claims = Claims {
            role,
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            sub: SUBJECT.to_string(),
        };
        let key = EncodingKey::from_secret(&self.0)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
    }

    /// HMAC-SHA256 of `data` under this secret, for the purpose `context` (so that a tag made
    /// for one use is never valid for another), in hex. The web UI's CSRF tokens are these.
    pub fn tag(&self, context: &str, data: &[u8]) -> String {
        use hmac::{KeyInit, Mac};
        // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(context.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// The claims of a token signed with this secret that has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp"]);
        let key =
            DecodingKey::from_secret(&self.0).map_err(|e| TokenError::Invalid(e.to_string()))?;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_carries_its_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let secret = Secret::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        let token = secret.mint(Role::Viewer, Duration::from_secs(60)).unwrap();
        let again = Secret::load_or_create(&path).unwrap();
        let claims = again.verify(&token).unwrap();
        assert_eq!(claims.role, Role::Viewer);
        assert_eq!(claims.sub, SUBJECT);
        assert!(claims.exp >= claims.iat + 60);

        let other = Secret(vec![7; 32]);
        assert!(matches!(other.verify(&token), Err(TokenError::Invalid(_))));
        assert!(format!("{other:?}") == "Secret(…)");
    }

    #[test]
    fn a_short_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Secret::load(&path),
            Err(SecretError::TooShort { len: 5, .. })
        ));
    }
}
