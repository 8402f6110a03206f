//! The page shell every page shares (head, navigation, sign-out form) and the small pieces pages
//! repeat: state badges, times, durations, sizes, the CSRF field.

use std::time::{Duration, SystemTime};

use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use super::session::{CSRF_FIELD, Session};

/// The navigation entries; the current one is marked for screen readers and the eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Pipelines,
    Runs,
    Resources,
}

/// Scripts a page needs besides the stylesheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripts {
    None,
    /// htmx and its SSE extension: the page updates itself from `/ui/events`.
    Live,
    /// The log follower.
    FollowLog,
}

fn head(title: &str, scripts: Scripts) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            // No favicon: say so, or every page asks for /favicon.ico.
            link rel="icon" href="data:,";
            title { (title) " · grit" }
            link rel="stylesheet" href=(assets::url("style.css"));
            @match scripts {
                Scripts::None => {}
                Scripts::Live => {
                    script src=(assets::url("htmx.min.js")) defer {}
                    script src=(assets::url("sse.min.js")) defer {}
                }
                Scripts::FollowLog => {
                    script src=(assets::url("follow.js")) defer {}
                }
            }
        }
    }
}

/// A page for a signed-in user.
pub fn page(session: &Session, title: &str, nav: Nav, scripts: Scripts, body: Markup) -> Response {
    let entry = |to: Nav, href: &str, text: &str| {
        html! {
            li {
                @if to == nav {
                    a href=(href) aria-current="page" { strong { (text) } }
                } @else {
                    a href=(href) { (text) }
                }
            }
        }
    };
    let role = match session.claims.role {
        crate::serve::auth::Role::Viewer => "viewer",
        crate::serve::auth::Role::Operator => "operator",
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, scripts))
                body {
                    header {
                        a.brand href="/ui/" { "grit" }
                        nav aria-label="Main" {
                            ul {
                                (entry(Nav::Pipelines, "/ui/", "Pipelines"))
                                (entry(Nav::Runs, "/ui/runs", "Runs"))
                                (entry(Nav::Resources, "/ui/resources", "Resources"))
                            }
                        }
                        form.inline method="post" action="/ui/logout" {
                            (csrf(session))
                            span.hint { "signed in as " (role) " " }
                            button type="submit" { "Sign out" }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
    .into_response()
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, Scripts::None))
                body {
                    header { a.brand href="/ui/" { "grit" } }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// The hidden CSRF field of a form.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// A run's or a task's state as a badge (colour and word: colour alone says nothing to some).
pub fn state(state: &str) -> Markup {
    html! { span class={ "state s-" (state) } { (state) } }
}

/// A step's tasks by state, as the Pipeline page (the store now) and the Run page (one run)
/// count them; both tables show the counts with [`task_count_heads`] and [`task_count_cells`].
pub struct TaskCounts {
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl TaskCounts {
    /// The counts in the order of a task's life, with their column titles: one list, so the
    /// heads and the cells cannot disagree.
    fn columns(&self) -> [(&'static str, u64); 4] {
        [
            ("Pending", self.pending),
            ("Running", self.running),
            ("Succeeded", self.succeeded),
            ("Failed", self.failed),
        ]
    }
}

/// The column heads of [`task_count_cells`].
pub fn task_count_heads() -> Markup {
    let none = TaskCounts {
        pending: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
    };
    html! { @for (title, _) in none.columns() { th.num scope="col" { (title) } } }
}

/// One table cell per state, in the order of [`task_count_heads`].
pub fn task_count_cells(counts: &TaskCounts) -> Markup {
    html! { @for (_, n) in counts.columns() { td.num { (n) } } }
}

fn parse_time(time: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(time.trim_end_matches('Z')).ok()
}

/// A stored time (RFC 3339) as "3 min ago", the exact time in `datetime` and `title`.
pub fn when(time: Option<&str>) -> Markup {
    let Some(time) = time else {
        return html! { span.hint { "—" } };
    };
    let ago = parse_time(time).map(|t| match SystemTime::now().duration_since(t) {
        Ok(d) => format!("{} ago", rough(d)),
        Err(e) => format!("in {}", rough(e.duration())),
    });
    let exact = time.replace('T', " ");
    let exact = exact
        .split('.')
        .next()
        .unwrap_or(&exact)
        .trim_end_matches('Z');
    html! { time datetime=(time) title={ (exact) " UTC" } { (ago.unwrap_or_else(|| exact.to_string())) } }
}

/// A time to come, given in unix milliseconds.
pub fn at_ms(ms: i64) -> Markup {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    when(Some(&text))
}

/// A duration to the nearest sensible unit: `850 ms`, `12 s`, `3 min`, `2 h 5 min`, `3 d`.
pub fn rough(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d", s / 86_400),
    }
}

/// How long something ran: from `start` to `end` (or to now while it runs).
pub fn took(start: Option<&str>, end: Option<&str>) -> Markup {
    let Some(start) = start.and_then(parse_time) else {
        return html! { span.hint { "—" } };
    };
    let end = end.and_then(parse_time).unwrap_or_else(SystemTime::now);
    html! { (rough(end.duration_since(start).unwrap_or_default())) }
}

/// A size in bytes, for people.
pub fn size(bytes: u64) -> String {
    crate::report::summary::human_bytes(bytes)
}

/// The first 12 characters of a hash, in monospace, the whole in `title`.
pub fn short_hash(hash: &str) -> Markup {
    html! { code title=(hash) { (hash.get(..12).unwrap_or(hash)) } }
}

/// A key/value list of facts.
pub fn facts<'a>(rows: impl IntoIterator<Item = (&'a str, Markup)>) -> Markup {
    html! {
        dl.facts {
            @for (k, v) in rows {
                dt { (k) }
                dd { (v) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(rough(Duration::from_millis(850)), "850 ms");
        assert_eq!(rough(Duration::from_secs(12)), "12 s");
        assert_eq!(rough(Duration::from_secs(180)), "3 min");
        assert_eq!(rough(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(rough(Duration::from_secs(3 * 86_400)), "3 d");
    }

    #[test]
    fn times_keep_the_exact_value() {
        let text = when(Some("2020-01-02T03:04:05.678Z")).into_string();
        assert!(
            text.contains("datetime=\"2020-01-02T03:04:05.678Z\""),
            "{text}"
        );
        assert!(text.contains("2020-01-02 03:04:05 UTC"), "{text}");
        assert!(text.contains(" ago"), "{text}");
    }

    #[test]
    fn task_count_cells_follow_their_heads() {
        let heads = task_count_heads().into_string();
        let cells = task_count_cells(&TaskCounts {
            pending: 1,
            running: 2,
            succeeded: 3,
            failed: 4,
        })
        .into_string();
        let titles: Vec<usize> = ["Pending", "Running", "Succeeded", "Failed"]
            .iter()
            .map(|t| heads.find(t).unwrap())
            .collect();
        assert!(titles.is_sorted(), "{heads}");
        assert_eq!(
            cells,
            "<td class=\"num\">1</td><td class=\"num\">2</td><td class=\"num\">3</td><td class=\"num\">4</td>"
        );
    }
}
