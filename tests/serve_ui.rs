//! The web UI of `grit serve` (issue 14) through the real binary over real HTTP, as a browser
//! without JavaScript sees it: sign-in and its cookie, CSRF, roles, the pages' content, and
//! that nothing leaks the store's path or the token secret. The browser tests in `tests/ui/`
//! cover what needs JavaScript (live updates, the log follower).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Project;
use common::serve::{Server, poll, store_token, token};

/// The browser tests' pipeline: a parameter, a step that fails for `bad`, one that runs long
/// for `slow`.
fn demo() -> (Project, Server) {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/demo.toml"))
            .expect("tests/ui/demo.toml");
    let project = Project::new(&manifest);
    let server = Server::single(&project.manifest(), &project.db());
    (project, server)
}

/// An HTTP client with a cookie jar that follows no redirects (the test looks at each one).
struct Browser {
    url: String,
    agent: ureq::Agent,
    cookies: BTreeMap<String, String>,
    /// `X-Forwarded-Proto: https` on every request (as behind a TLS proxy).
    tls: bool,
}

struct Answer {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            url: server.url.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            cookies: BTreeMap::new(),
            tls: false,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn answer(&mut self, response: ureq::http::Response<ureq::Body>) -> Answer {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for cookie in &set_cookies {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let body = response.into_body().read_to_string().unwrap_or_default();
        Answer {
            status,
            location,
            set_cookies,
            body,
        }
    }

    fn get(&mut self, path: &str) -> Answer {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Cookie", self.cookie_header());
        if self.tls {
            request = request.header("X-Forwarded-Proto", "https");
        }
        let response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        self.answer(response)
    }

    fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let mut request = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Cookie", self.cookie_header())
            .header("Content-Type", "application/x-www-form-urlencoded");
        if self.tls {
            request = request.header("X-Forwarded-Proto", "https");
        }
        let response = request
            .send(body.as_bytes())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        self.answer(response)
    }

    /// Sign in through the login form with `token`.
    fn sign_in(&mut self, token: &str) -> Answer {
        let form = self.get("/ui/login?next=/ui/runs");
        assert_eq!(form.status, 200, "{}", form.body);
        let nonce = field(&form.body, "csrf");
        self.post(
            "/ui/login",
            &[("token", token), ("csrf", &nonce), ("next", "/ui/runs")],
        )
    }

    /// The CSRF token of this session's forms.
    fn csrf(&mut self) -> String {
        field(&self.get("/ui/").body, "csrf")
    }
}

/// The value of the first input named `name` in `html`.
fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The state a run page shows for the run.
fn run_state(html: &str) -> &str {
    let at = html.find("id=\"run-state\"").expect("a run state");
    let badge = "class=\"state s-";
    let rest = &html[at + html[at..].find(badge).unwrap() + badge.len()..];
    &rest[..rest.find('"').unwrap()]
}

/// Poll page `path` until `check` holds on its HTML; returns it.
fn wait_page(
    browser: &mut Browser,
    path: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    poll(&format!("{path}: {what}"), || {
        let page = browser.get(path);
        assert_eq!(page.status, 200, "{}", page.body);
        check(&page.body).then_some(page.body)
    })
}

/// Queue a run of `demo` with `region` from the Run form; returns its page's path.
fn run_from_form(browser: &mut Browser, region: &str) -> String {
    let form = browser.get("/ui/pipelines/demo/run");
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = field(&form.body, "csrf");
    let queued = browser.post(
        "/ui/pipelines/demo/runs",
        &[("csrf", &csrf), ("param.region", region)],
    );
    assert_eq!(queued.status, 303, "{}", queued.body);
    queued.location.expect("the run's page")
}

#[test]
fn signing_in_sets_a_strict_http_only_cookie_and_signing_out_clears_it() {
    let (project, server) = demo();
    let mut browser = Browser::new(&server);
    // Signed out: every page sends to the login form, which brings the user back.
    let page = browser.get("/ui/runs?status=failed");
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/ui/login?next=/ui/runs%3Fstatus%3Dfailed")
    );
    // A token of another server, and a login post without the form's nonce, are refused.
    let form = browser.get("/ui/login");
    let nonce = field(&form.body, "csrf");
    let other = tempfile::tempdir().unwrap();
    let other_secret = other.path().join("secret");
    std::fs::write(&other_secret, [7u8; 32]).unwrap();
    let foreign = token(
        "operator",
        &["--token-secret-file".as_ref(), other_secret.as_os_str()],
    );
    let refused = browser.post("/ui/login", &[("token", &foreign), ("csrf", &nonce)]);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.body.contains("not valid for this server"),
        "{}",
        refused.body
    );
    assert!(!browser.cookies.contains_key("grit_session"));
    let mut stranger = Browser::new(&server);
    let operator = store_token("operator", &project.db());
    let forged = stranger.post("/ui/login", &[("token", &operator), ("csrf", "0000")]);
    assert_eq!(forged.status, 403, "{}", forged.body);

    browser.tls = true;
    let signed_in = browser.sign_in(&operator);
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location.as_deref(), Some("/ui/runs"));
    let cookie = signed_in
        .set_cookies
        .iter()
        .find(|c| c.starts_with("grit_session="))
        .expect("a session cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/ui",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert_eq!(browser.get("/ui/runs").status, 200);

    // Signing out needs the session's CSRF token too, then clears the cookie.
    assert_eq!(browser.post("/ui/logout", &[]).status, 403);
    let csrf = browser.csrf();
    let out = browser.post("/ui/logout", &[("csrf", &csrf)]);
    assert_eq!(out.status, 303);
    assert!(
        out.set_cookies
            .iter()
            .any(|c| c.starts_with("grit_session=;") && c.contains("Max-Age=0")),
        "{:?}",
        out.set_cookies
    );
    assert_eq!(browser.get("/ui/").status, 303);
}

#[test]
fn a_next_with_control_characters_signs_in_to_the_home_page() {
    let (project, server) = demo();
    let mut browser = Browser::new(&server);
    let operator = store_token("operator", &project.db());
    // The form does not carry such a `next` on.
    let form = browser.get("/ui/login?next=%2Fui%2Fruns%0D%0ASet-Cookie%3A%20x%3D1");
    assert_eq!(form.status, 200, "{}", form.body);
    assert_eq!(field(&form.body, "next"), "/ui/");
    // Nor does the login redirect to it.
    for next in ["/ui/runs\r\nSet-Cookie: x=1", "/ui/runs\n", "/ui/\t"] {
        let nonce = field(&browser.get("/ui/login").body, "csrf");
        let signed_in = browser.post(
            "/ui/login",
            &[("token", &operator), ("csrf", &nonce), ("next", next)],
        );
        assert_eq!(signed_in.status, 303, "{next:?}: {}", signed_in.body);
        assert_eq!(signed_in.location.as_deref(), Some("/ui/"), "{next:?}");
    }
}

#[test]
fn a_viewer_sees_no_run_or_cancel_controls_and_a_forged_post_is_403() {
    let (project, server) = demo();
    let operator = store_token("operator", &project.db());
    let viewer = store_token("viewer", &project.db());
    let mut op = Browser::new(&server);
    op.sign_in(&operator);
    let run = run_from_form(&mut op, "slow");
    wait_page(&mut op, &run, "running", |h| run_state(h) == "running");

    let mut browser = Browser::new(&server);
    assert_eq!(browser.sign_in(&viewer).status, 303);
    let pipelines = browser.get("/ui/").body;
    assert!(pipelines.contains("signed in as viewer"), "{pipelines}");
    assert!(
        !pipelines.contains("/ui/pipelines/demo/run\""),
        "{pipelines}"
    );
    let run_page = browser.get(&run).body;
    assert_eq!(run_state(&run_page), "running", "{run_page}");
    assert!(!run_page.contains("Cancel"), "{run_page}");
    assert!(!run_page.contains("Run again"), "{run_page}");
    assert_eq!(browser.get("/ui/pipelines/demo/run").status, 403);
    // Forged: the viewer's own valid CSRF token still does not make it an operator.
    let csrf = browser.csrf();
    let forged = browser.post(
        "/ui/pipelines/demo/runs",
        &[("csrf", &csrf), ("param.region", "us")],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("operator role"), "{}", forged.body);
    assert_eq!(
        browser
            .post(&format!("{run}/cancel"), &[("csrf", &csrf)])
            .status,
        403
    );
    // An operator's post without the session's token is refused as well.
    assert_eq!(
        op.post(&format!("{run}/cancel"), &[("csrf", "forged")])
            .status,
        403
    );
    assert_eq!(run_state(&op.get(&run).body), "running");
    let (_, runs) = server.get("/runs", Some(&viewer));
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");

    // The operator cancels it from its page.
    let csrf = op.csrf();
    let cancelled = op.post(&format!("{run}/cancel"), &[("csrf", &csrf)]);
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    wait_page(&mut op, &run, "cancelled", |h| run_state(h) == "cancelled");
}

#[test]
fn pages_show_runs_failures_logs_graph_and_provenance_without_javascript() {
    let (project, server) = demo();
    let operator = store_token("operator", &project.db());
    let mut browser = Browser::new(&server);
    browser.sign_in(&operator);
    let form = browser.get("/ui/pipelines/demo/run").body;
    assert!(
        form.contains("name=\"param.region\" value=\"eu\""),
        "{form}"
    );
    assert!(
        form.contains("<label for=\"param-region\">region</label>"),
        "{form}"
    );

    let good = run_from_form(&mut browser, "us");
    let page = wait_page(&mut browser, &good, "succeeded", |h| {
        run_state(h) == "succeeded"
    });
    assert!(page.contains("<code>region=us</code>"), "{page}");
    assert!(
        page.contains("aria-label=\"check: 3 of 3 tasks done\""),
        "{page}"
    );
    // Live with JavaScript, complete without it.
    assert!(
        page.contains("sse-connect=\"/ui/events?pipeline=demo\""),
        "{page}"
    );

    let bad = run_from_form(&mut browser, "bad");
    let page = wait_page(&mut browser, &bad, "failed", |h| run_state(h) == "failed");
    // Failed tasks come first, with their error.
    let first_task = page.find("/ui/tasks/").expect("a task link");
    let task = &page[first_task..first_task + page[first_task..].find('"').unwrap()];
    let row = &page[first_task..first_task + page[first_task..].find("</tr>").unwrap()];
    assert!(
        row.contains("s-failed") && row.contains("error-line"),
        "{row}"
    );
    let task_page = browser.get(task).body;
    assert!(
        task_page.contains("check failed: no such region bad in loud_row_"),
        "{task_page}"
    );
    assert!(
        task_page.contains("<dt>Exit code</dt><dd>3</dd>"),
        "{task_page}"
    );
    // Why it ran, as the run recorded it: only the parameter's value differs from the version
    // that ran before (the form's `us` run).
    assert!(
        task_page.contains(
            "<dt>Why it ran</dt><dd><span id=\"reason\">parameter value changed</span></dd>"
        ),
        "{task_page}"
    );

    let pipeline = browser.get("/ui/pipelines/demo").body;
    assert!(pipeline.contains("<svg"), "{pipeline}");
    assert!(pipeline.contains("class=\"n-failed\""), "{pipeline}");
    assert!(pipeline.contains("What a run would do now"), "{pipeline}");
    // The dry run: the form's `bad` run left the default `eu` a new version of `check`.
    assert!(pipeline.contains("parameter value changed"), "{pipeline}");

    let runs = browser.get("/ui/runs?status=failed&pipeline=demo").body;
    assert!(
        runs.contains(&bad) && !runs.contains(&format!("{good}\"")),
        "{runs}"
    );

    // Provenance: from a derived resource back to the source's output.
    let resources = browser.get("/ui/resources?q=loud_row_1").body;
    let at = resources.find("/ui/resources/").expect("a resource link");
    let link = &resources[at..at + resources[at..].find('"').unwrap()];
    let resource = browser.get(&link.replace("&amp;", "&")).body;
    assert!(
        resource.contains("of step <strong>shout</strong>"),
        "{resource}"
    );
    assert!(resource.contains("row_1.txt</a>"), "{resource}");
    assert!(
        resource.contains("of step <strong>fetch</strong>"),
        "{resource}"
    );
    let hash = &link["/ui/resources/".len()..link.find('?').unwrap()];
    let by_hash = browser.get(&format!("/ui/resources?q={}", &hash[..10]));
    assert_eq!(by_hash.status, 303);
    let history = browser.get("/ui/resources?show=history").body;
    assert!(history.contains("<th scope=\"col\">Live</th>"), "{history}");
}

#[test]
fn no_page_or_asset_shows_the_store_path_or_the_secret() {
    let (project, server) = demo();
    let operator = store_token("operator", &project.db());
    let mut browser = Browser::new(&server);
    browser.sign_in(&operator);
    let run = run_from_form(&mut browser, "bad");
    let page = wait_page(&mut browser, &run, "ended", |h| run_state(h) == "failed");
    let task = {
        let at = page.find("/ui/tasks/").unwrap();
        page[at..at + page[at..].find('"').unwrap()].to_string()
    };
    let secret = std::fs::read(project.db().join("token-secret")).expect("the secret");
    let secrets = [
        hex::encode(&secret),
        String::from_utf8_lossy(&secret).into_owned(),
    ];
    let root = project.path().display().to_string();
    let mut pages = vec![
        "/ui/".to_string(),
        "/ui/pipelines/demo".into(),
        "/ui/pipelines/demo/run".into(),
        "/ui/runs".into(),
        run.clone(),
        format!("{run}/live"),
        task,
        "/ui/resources?show=history".into(),
        "/ui/login".into(),
        "/ui/nope".into(),
    ];
    for asset in ["htmx.min.js", "sse.min.js", "follow.js", "style.css"] {
        pages.push(format!("/ui/assets/{asset}"));
    }
    for path in pages {
        let page = browser.get(&path);
        assert!(
            page.status == 200 || path == "/ui/nope",
            "{path}: {}",
            page.status
        );
        assert!(
            !page.body.contains(&root),
            "{path} shows the project's path {root}"
        );
        assert!(
            !page.body.contains("token-secret"),
            "{path} names the secret's file"
        );
        for s in &secrets {
            assert!(!page.body.contains(s.as_str()), "{path} shows the secret");
        }
        assert!(
            page.body.len() <= 100 * 1024,
            "{path}: {} bytes",
            page.body.len()
        );
    }
}

/// The numbers of step `step`'s row in the Pipeline page's table of tasks by state: pending,
/// running, succeeded, failed, live outputs.
fn step_counts(html: &str, step: &str) -> Vec<u64> {
    let at = html
        .find(&format!("<th scope=\"row\">{step} "))
        .unwrap_or_else(|| panic!("no row of {step} in {html}"));
    let row = &html[at..at + html[at..].find("</tr>").unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for c in row.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    words[words.len() - 5..]
        .iter()
        .map(|w| w.parse().unwrap_or_else(|_| panic!("{w} in {row}")))
        .collect()
}

#[test]
fn the_pipeline_page_shows_the_counts_of_grit_status_after_every_run() {
    // The page keeps its step models until the store changes: each run must show at once.
    let (project, server) = demo();
    let operator = store_token("operator", &project.db());
    let mut browser = Browser::new(&server);
    browser.sign_in(&operator);
    let empty = browser.get("/ui/pipelines/demo").body;
    assert!(empty.contains("No step has run yet"), "{empty}");
    for (region, state) in [("us", "succeeded"), ("bad", "failed"), ("eu", "succeeded")] {
        let run = run_from_form(&mut browser, region);
        wait_page(&mut browser, &run, state, |h| run_state(h) == state);
        let page = browser.get("/ui/pipelines/demo").body;
        let status = project.status();
        for step in status["steps"].as_array().unwrap() {
            let name = step["name"].as_str().unwrap();
            let expected: Vec<u64> = ["pending", "running", "succeeded", "failed", "live_outputs"]
                .iter()
                .map(|k| step[k].as_u64().unwrap())
                .collect();
            assert_eq!(
                step_counts(&page, name),
                expected,
                "{name} after the {region} run"
            );
        }
        let failed = status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["failed"].as_u64() > Some(0));
        assert_eq!(page.contains("class=\"n-failed\""), failed, "{page}");
    }
}

#[test]
fn a_huge_task_log_is_served_and_shown_without_the_server_holding_it_in_memory() {
    // A viewer asking for a big log (or its task's page) must not make the server hold the log
    // in memory, once per request: six requests for a 400 MB log took it to 5 GB.
    const SIZE: usize = 96 << 20;
    let project = Project::new(&format!(
        "[[step]]\nname = \"loud\"\nscript = 'head -c {SIZE} /dev/zero | tr \"\\\\000\" a; echo done > \"$OUTPUT_DIR/done\"'\n"
    ));
    let (out, _) = project.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    let before = peak();
    let mut log = server.raw_get("/tasks/pipeline.1/log", &viewer, &[]);
    assert_eq!(log.status().as_u16(), 200);
    let mut reader = log.body_mut().as_reader();
    let (mut total, mut buffer, mut all_a) = (0usize, vec![0u8; 1 << 16], true);
    loop {
        let n = std::io::Read::read(&mut reader, &mut buffer).unwrap();
        if n == 0 {
            break;
        }
        all_a &= buffer[..n].iter().all(|&b| b == b'a');
        total += n;
    }
    assert_eq!(total, SIZE, "the whole log");
    assert!(all_a, "the log's own bytes");
    let mut browser = Browser::new(&server);
    browser.sign_in(&viewer);
    let page = browser.get("/ui/tasks/pipeline.1");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("The last 48 KiB"), "{}", page.body);
    assert!(
        page.body.contains(&"a".repeat(1000)),
        "the log's tail is shown"
    );
    let grown = peak().saturating_sub(before);
    assert!(
        grown < (SIZE as u64) / 2,
        "the server's peak memory grew by {grown} bytes for a {SIZE}-byte log"
    );
}

#[test]
fn responses_are_not_stored_sniffed_or_framed_and_assets_keep_their_caching() {
    let (project, server) = demo();
    let viewer = store_token("viewer", &project.db());
    let api = server.raw_get("/pipelines", &viewer, &[]);
    let header = |response: &ureq::http::Response<ureq::Body>, name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(api.status().as_u16(), 200);
    assert_eq!(header(&api, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        header(&api, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(header(&api, "x-frame-options").as_deref(), Some("DENY"));
    let mut browser = Browser::new(&server);
    browser.sign_in(&viewer);
    let page = browser
        .agent
        .get(format!("{}/ui/runs", server.url))
        .header("Cookie", browser.cookie_header())
        .call()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(header(&page, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        header(&page, "content-security-policy").as_deref(),
        Some("frame-ancestors 'none'")
    );
    let html = page.into_body().read_to_string().unwrap();
    let asset = html
        .split('"')
        .find(|s| s.starts_with("/ui/assets/"))
        .expect("an asset in the page")
        .to_string();
    let asset = browser
        .agent
        .get(format!("{}{asset}", server.url))
        .call()
        .unwrap();
    assert_eq!(asset.status().as_u16(), 200);
    let caching = header(&asset, "cache-control").unwrap_or_default();
    assert_ne!(caching, "no-store", "assets keep their own caching");
    assert_eq!(
        header(&asset, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
}
