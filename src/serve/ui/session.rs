//! Who uses the web UI: login with a grit token, the session cookie that holds it, logout, and
//! the CSRF token every form that changes something carries.
//!
//! The cookie holds the token itself (the server keeps no session table): `HttpOnly` (scripts
//! cannot read it), `SameSite=Strict` (other sites' pages never send it), `Path=/ui`, `Secure`
//! when the request came over HTTPS (a TLS-terminating proxy says so with
//! `X-Forwarded-Proto: https`), and it expires with the token. A form's CSRF token is an HMAC
//! of the session's token under the server's secret, so only a page this server rendered for
//! this session knows it. The login form, before any session, uses a double-submit nonce.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::layout;
use super::{Page, UiError};
use crate::serve::api::Shared;
use crate::serve::auth::{Claims, Role, TokenError};

/// The session cookie.
const SESSION_COOKIE: &str = "grit_session";
/// The login form's double-submit nonce.
const LOGIN_COOKIE: &str = "grit_login";
/// The name of the CSRF field in every form.
pub const CSRF_FIELD: &str = "csrf";
/// The HMAC context of CSRF tokens (see [`crate::serve::auth::Secret::tag`]).
const CSRF_CONTEXT: &str = "grit-ui-csrf";
/// Largest form body read (a trigger's parameters are short).
const MAX_FORM: usize = 64 * 1024;

/// The signed-in user of a request, put there by [`require`].
#[derive(Debug, Clone)]
pub struct Session {
    pub claims: Claims,
    /// The CSRF token of this session's forms.
    pub csrf: String,
}

impl Session {
    /// May trigger and cancel runs.
    pub fn operator(&self) -> bool {
        self.claims.role == Role::Operator
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over HTTPS (directly or through a TLS-terminating proxy).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value with the UI's attributes.
fn set_cookie(name: &str, value: &str, max_age_s: u64, tls: bool) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Signed in, or redirected to the login page (`next` brings the user back). A POST must also
/// carry the session's CSRF token (403 otherwise); its form body is handed on unchanged.
pub async fn require(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let token = cookie(request.headers(), SESSION_COOKIE).map(str::to_string);
    let claims = token.as_deref().map(|t| state.secret.verify(t));
    let (token, claims) = match (token, claims) {
        (Some(token), Some(Ok(claims))) => (token, claims),
        (_, found) => {
            if request.method() != Method::GET {
                return UiError::new(
                    StatusCode::UNAUTHORIZED,
                    "not signed in (or the session expired): sign in again",
                )
                .into_response();
            }
            let next_path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/ui/");
            let expired = matches!(found, Some(Err(TokenError::Expired)));
            let mut to = format!("/ui/login?next={}", percent_encode(next_path));
            if expired {
                to.push_str("&expired=1");
            }
            return Redirect::to(&to).into_response();
        }
    };
    let csrf = state.secret.tag(CSRF_CONTEXT, token.as_bytes());
    let mut request = request;
    if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")
                    .into_response();
            }
        };
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let given = fields
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !same(given, &csrf) {
            return UiError::new(
                StatusCode::FORBIDDEN,
                "this form did not come from a page of this session (missing or wrong CSRF token): reload the page and try again",
            )
            .into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(Session { claims, csrf });
    next.run(request).await
}

/// Changes need the operator role: a viewer gets 403 however the request was made.
pub async fn require_operator(request: Request, next: Next) -> Response {
    let operator = request
        .extensions()
        .get::<Session>()
        .is_some_and(Session::operator);
    if !operator {
        return UiError::new(
            StatusCode::FORBIDDEN,
            "this needs the operator role; you are signed in as a viewer",
        )
        .into_response();
    }
    next.run(request).await
}

/// Percent-encode everything but unreserved characters and `/` (for the `next` parameter).
fn percent_encode(text: &str) -> String {
    crate::serve::http::percent_encode(text, b"-._~/")
}

/// Where to go after login: a path of the UI only (never another site), without control
/// characters (CR/LF cannot go into the `Location` header).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/ui/",
    }
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    expired: Option<String>,
}

/// 16 random bytes in hex.
fn nonce() -> Result<String, UiError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut r| r.read_exact(&mut bytes))
        .map_err(|e| {
            tracing::error!("reading /dev/urandom: {e}");
            UiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server cannot make a login form now; its log says why",
            )
        })?;
    Ok(hex::encode(bytes))
}

fn login_page(
    next: &str,
    nonce: &str,
    message: Option<&str>,
    status: StatusCode,
    tls: bool,
) -> Response {
    let body = layout::bare(
        "Sign in",
        maud::html! {
            h1 { "Sign in to grit" }
            @if let Some(message) = message {
                p.notice role="alert" { (message) }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name=(CSRF_FIELD) value=(nonce);
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" required autocomplete="off"
                    aria-describedby="token-hint";
                p #token-hint .hint {
                    "A token from " code { "grit token --role viewer" } " or "
                    code { "--role operator" } " on the server."
                }
                p { button.primary type="submit" { "Sign in" } }
            }
        },
    );
    let mut response = (status, body).into_response();
    if let Some(value) = set_cookie(LOGIN_COOKIE, nonce, 3600, tls) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `GET /ui/login`
pub async fn login_form(headers: HeaderMap, Query(query): Query<LoginQuery>) -> Page {
    let message = query
        .expired
        .is_some()
        .then_some("Your session has expired: sign in again.");
    Ok(login_page(
        safe_next(query.next.as_deref()),
        &nonce()?,
        message,
        StatusCode::OK,
        over_tls(&headers),
    ))
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /ui/login`: a valid token becomes the session cookie.
pub async fn login(
    State(state): State<Shared>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Page {
    let tls = over_tls(&headers);
    let next = safe_next(form.next.as_deref()).to_string();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same(expected, &form.csrf) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "the login form expired or did not come from this server: open the login page again",
        ));
    }
    let token = form.token.trim();
    let claims = match state.secret.verify(token) {
        Ok(claims) => claims,
        Err(e) => {
            let message = match e {
                TokenError::Expired => {
                    "This token has expired: mint a new one with `grit token`.".to_string()
                }
                // Why exactly is for the server's log; the page says only that it was refused.
                TokenError::Invalid(_) => {
                    "This token is not valid for this server: mint one with `grit token` on it."
                        .to_string()
                }
            };
            return Ok(login_page(
                &next,
                &nonce()?,
                Some(&message),
                StatusCode::UNAUTHORIZED,
                tls,
            ));
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cookie = set_cookie(SESSION_COOKIE, token, claims.exp.saturating_sub(now), tls)
        .ok_or_else(|| UiError::bad_request("a token has only printable characters"))?;
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, cookie);
    if let Some(clear) = set_cookie(LOGIN_COOKIE, "", 0, tls) {
        h.append(header::SET_COOKIE, clear);
    }
    Ok(response)
}

/// `POST /ui/logout`: the cookie is cleared (the token itself stays valid until it expires).
pub async fn logout(headers: HeaderMap) -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    if let Some(clear) = set_cookie(SESSION_COOKIE, "", 0, over_tls(&headers)) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_ui() {
        assert_eq!(safe_next(Some("/ui/runs?x=1")), "/ui/runs?x=1");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(safe_next(Some("/api/v1/runs")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
        assert_eq!(safe_next(Some("/ui/runs\r\nSet-Cookie: x=1")), "/ui/");
        assert_eq!(safe_next(Some("/ui/\t")), "/ui/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; grit_session=tok; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "c"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
        assert_eq!(percent_encode("/ui/runs?a=b c"), "/ui/runs%3Fa%3Db%20c");
    }
}
