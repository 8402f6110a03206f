//! The HTTP client of `grit trigger` and `grit runs`: finds the token (`--token-file`,
//! `$GRIT_TOKEN_FILE`, `$GRIT_TOKEN`), calls the API, and turns its `{"error": {...}}` answers
//! into errors with the exit codes of the CLI (2 for a refused request, 5 for an unreachable
//! server, 1 otherwise).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::commands::exit::UsageError;

/// A request that gets no answer within this long fails (`--wait` polls, it never hangs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{server}: {status} {code}: {message}")]
    Api {
        server: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The server cannot be reached (the I/O error is the source: exit 5).
    #[error(
        "cannot reach the server at {server}\n  help: is `grit serve` running there? (--server or $GRIT_SERVER)"
    )]
    Unreachable {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{server}: {message}")]
    Protocol { server: String, message: String },
}

impl ClientError {
    /// The CLI's view: a request the server refused as wrong is a usage error (exit 2).
    pub fn into_anyhow(self) -> anyhow::Error {
        match &self {
            ClientError::Api {
                status: 400 | 401 | 403 | 404 | 413,
                ..
            } => UsageError(self.to_string()).into(),
            _ => self.into(),
        }
    }
}

/// A client of one server with one token.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(server: &str, token_file: Option<&Path>) -> anyhow::Result<Client> {
        let token = match token_file {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| UsageError(format!("--token-file {}: {e}", file.display())))?,
            None => std::env::var("GRIT_TOKEN").map_err(|_| {
                UsageError(
                    "no token: give --token-file FILE, or set $GRIT_TOKEN_FILE or $GRIT_TOKEN\n  help: an operator of the server mints one with `grit token --role operator`"
                        .into(),
                )
            })?,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            agent,
        })
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call();
        self.answer(response)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(body);
        self.answer(response)
    }

    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let server = self.base.clone();
        let mut response = response.map_err(|e| match e {
            ureq::Error::Io(source) => ClientError::Unreachable {
                server: server.clone(),
                source,
            },
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => ClientError::Unreachable {
                server: server.clone(),
                source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()),
            },
            other => ClientError::Protocol {
                server: server.clone(),
                message: other.to_string(),
            },
        })?;
        let status = response.status().as_u16();
        let body: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| ClientError::Protocol {
                server: server.clone(),
                message: format!("status {status}, and the answer is not JSON: {e}"),
            })?;
        if status >= 400 {
            let error = &body["error"];
            return Err(ClientError::Api {
                server,
                status,
                code: error["code"].as_str().unwrap_or("unknown").to_string(),
                message: error["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(body)
    }
}

/// Percent-encode a query value (pipeline names and states are plain; this keeps it safe).
pub fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
