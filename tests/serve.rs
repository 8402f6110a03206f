//! `grit serve` (issue 12) through the real binary: a real server on a random loopback port, real
//! HTTP, real stores. Runs are held in the middle by a gate file a step waits for, so every test
//! knows what state a run is in by looking, never by sleeping.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::serve::{Gate, Server, SseReader, poll, store_token, token};
use common::{Project, describe};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Three items; `work` holds on `item_b` until the gate opens; `total` gathers.
fn manifest(markers: &Path) -> String {
    let dir = markers.display();
    format!(
        r#"
[[step]]
name = "split"
once = true
script = 'for f in a b c; do echo "$f" > $OUTPUT_DIR/item_$f; done'

[[step]]
name = "work"
inputs = ["item_*"]
script = '''
touch "{dir}/started-$GRIT_INPUT_NAME"
echo "working on $GRIT_INPUT_NAME"
if [ "$GRIT_INPUT_NAME" = item_b ]; then
  while [ ! -e "{dir}/gate" ]; do sleep 0.02; done
  echo "the gate opened"
fi
tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/done_$GRIT_INPUT_NAME"
'''

[[step]]
name = "total"
inputs = ["done_*"]
gather = true
script = 'cat "$INPUT_DIR"/* | sort > $OUTPUT_DIR/total'
"#
    )
}

/// A project whose manifest is [`manifest`] with its markers and gate inside the project.
fn gated_project() -> (Project, Gate) {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = Project { dir };
    project.write_manifest(&manifest(project.path()));
    let gate = Gate(project.path().join("gate"));
    (project, gate)
}

fn started(project: &Project, input: &str) -> bool {
    project.path().join(format!("started-{input}")).exists()
}

fn sorted_live(project: &Project) -> Vec<(String, String)> {
    let mut live = project.live();
    live.sort();
    live
}

/// The live set of a clean `grit run` of the same manifest (gate open from the start).
fn reference_live() -> Vec<(String, String)> {
    let (reference, gate) = gated_project();
    gate.open();
    reference.run_ok(&[]);
    sorted_live(&reference)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error shape: {body}"))
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn a_triggered_run_equals_grit_run_and_trigger_wait_exits_like_run() {
    let (project, gate) = gated_project();
    gate.open();
    std::fs::write(
        project.path().join("bad.toml"),
        "[[step]]\nname = \"boom\"\nscript = 'echo oops >&2; exit 3'\n",
    )
    .unwrap();
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\n\
         [pipelines.good]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\n\
         [pipelines.bad]\nmanifest = \"bad.toml\"\ndb = \"bad-db\"\nno_sandbox = true\n",
    );
    let server = Server::config(&config);
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let trigger = |pipeline: &str| {
        Command::new(assert_cmd::cargo::cargo_bin("grit"))
            .args([
                "trigger",
                pipeline,
                "--wait",
                "--json",
                "--server",
                &server.url,
            ])
            .env("GRIT_TOKEN", &operator)
            .env_remove("GRIT_TOKEN_FILE")
            .output()
            .expect("grit trigger")
    };
    let good = trigger("good");
    assert_eq!(good.status.code(), Some(0), "{}", describe(&good));
    let stderr = String::from_utf8_lossy(&good.stderr);
    assert!(stderr.contains("good.1 succeeded"), "{stderr}");
    let run: Value = serde_json::from_slice(&good.stdout).expect("run JSON");
    assert_eq!(run["status"], "succeeded");
    let work = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "work")
        .unwrap();
    assert_eq!(work["succeeded"], 3, "{run}");

    let bad = trigger("bad");
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("boom task"));

    let unknown = trigger("nope");
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no pipeline `nope`"));

    let runs = Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["runs", "--server", &server.url, "--pipeline", "good"])
        .env("GRIT_TOKEN", &operator)
        .output()
        .expect("grit runs");
    assert!(runs.status.success(), "{}", describe(&runs));
    let table = String::from_utf8_lossy(&runs.stdout);
    assert!(table.starts_with("RUN "), "{table}");
    assert!(table.contains("good.1  succeeded  api"), "{table}");
    assert!(!table.contains("bad.1"), "{table}");

    let status = server.stop();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    assert_eq!(sorted_live(&project), reference_live());
}

#[test]
fn a_client_that_sends_no_whole_request_is_disconnected_and_others_are_served() {
    // Half a request head, or a kept-alive connection with no next request, must not hold a
    // descriptor for ever: enough of them (about a thousand) left the server unable to accept.
    use std::io::Read;
    let (project, gate) = gated_project();
    gate.open();
    let server = Server::single_with_env(
        &project.manifest(),
        &project.db(),
        &[("GRIT_TEST_HEADER_TIMEOUT_MS", "400")],
    );
    let address = server.url.trim_start_matches("http://").to_string();
    let open = || {
        let stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        stream
    };
    // Reads until the server closes; how long that took, and what came.
    let until_closed = |mut stream: std::net::TcpStream| {
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the server kept the connection: {e}"),
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&got).into_owned(),
        )
    };
    let mut half = open();
    half.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = open();
    idle.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (waited, said) = until_closed(half);
    assert!(waited < std::time::Duration::from_secs(15), "{waited:?}");
    assert!(!said.contains("200 OK"), "{said}");
    // Answered, then closed once no next request came.
    let (waited, said) = until_closed(idle);
    assert!(said.starts_with("HTTP/1.1 200 OK"), "{said}");
    assert!(waited < std::time::Duration::from_secs(15), "{waited:?}");
    let (status, _) = server.get("/healthz", None);
    assert_eq!(status, 200);
}

#[test]
fn when_every_connection_slot_is_taken_the_log_says_so_and_the_slots_come_back() {
    // With 128 descriptors the server serves 64 connections at once; the 65th waits in the
    // kernel's queue, and the operator must be able to see why.
    use std::os::unix::process::CommandExt;
    let (project, gate) = gated_project();
    gate.open();
    let mut command = Server::single_command(
        &project.manifest(),
        &project.db(),
        &[("GRIT_TEST_HEADER_TIMEOUT_MS", "1500")],
    );
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 128, 128)
                .map_err(std::io::Error::from)
        });
    }
    let server = Server::spawn(command);
    let address = server.url.trim_start_matches("http://").to_string();
    let idle: Vec<_> = (0..70)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    poll("the log to say the slots are taken", || {
        server
            .stderr()
            .contains("all 64 connection slots are taken")
            .then_some(())
    });
    // The idle clients are dropped after the header timeout, and the server answers again.
    let (status, _) = server.get("/healthz", None);
    assert_eq!(status, 200);
    drop(idle);
}

#[test]
fn a_client_that_stops_reading_a_download_is_disconnected_and_others_are_served() {
    // A reader that takes nothing holds its connection slot while the response waits for the
    // socket's buffer; enough of them are the same exhaustion as clients that send nothing.
    use std::io::Read;
    // 64 MiB: far more than loopback's socket buffers can hold on both sides.
    let size: usize = 64 << 20;
    let (project, hash, _) = big_object(size as u64);
    let server = Server::single_with_env(
        &project.manifest(),
        &project.db(),
        &[("GRIT_TEST_SEND_TIMEOUT_MS", "400")],
    );
    let operator = store_token("operator", &project.db());

    let address = server.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/resources/{hash}/content HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {operator}\r\n\r\n"
    )
    .unwrap();
    // The head comes once the whole object has checked out; then take nothing for well over
    // the limit, then everything the server still sends.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 OK"), "{head:?}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the stalled connection: {e} after {got} bytes"),
        }
    }
    assert!(got > 0, "the response had begun");
    assert!(
        got < size,
        "the whole object came after a 3 s stall: {got} bytes"
    );
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());

    // A client that keeps reading gets every byte.
    let mut whole = server.raw_get(&format!("/resources/{hash}/content"), &operator, &[]);
    assert_eq!(whole.status().as_u16(), 200);
    let mut body = Vec::new();
    whole.body_mut().as_reader().read_to_end(&mut body).unwrap();
    assert_eq!(body.len(), size);
}

#[test]
fn a_login_form_trickled_slower_than_request_timeout_is_answered_408() {
    // The login form is the one request anyone may send; its body must not hold a connection
    // for as long as the client likes.
    use std::io::Read;
    let (project, gate) = gated_project();
    gate.open();
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\nrequest_timeout = \"1s\"\n[pipelines.p]\n\
         manifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\n",
    );
    let server = Server::config(&config);
    let address = server.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(
            b"POST /ui/login HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=",
        )
        .unwrap();
    let asked = std::time::Instant::now();
    let mut answer = [0u8; 64];
    let n = stream
        .read(&mut answer)
        .expect("an answer before the client gives up");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn tokens_missing_expired_forged_or_of_the_wrong_role_are_refused() {
    let (project, gate) = gated_project();
    gate.open();
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let operator = store_token("operator", &project.db());

    let (status, body) = server.get("/healthz", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let (status, body) = server.get("/pipelines", None);
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));

    // Signed with the right secret, expired an hour ago.
    let secret = std::fs::read(project.db().join("token-secret")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |claims: Value, key: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key).unwrap(),
        )
        .unwrap()
    };
    let expired = sign(
        serde_json::json!({"role": "operator", "iat": now - 7200, "exp": now - 3600, "sub": "grit-token"}),
        &secret,
    );
    let (status, body) = server.get("/pipelines", Some(&expired));
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    let forged = sign(
        serde_json::json!({"role": "operator", "iat": now, "exp": now + 3600, "sub": "grit-token"}),
        b"not the server's secret at all, no",
    );
    let (status, body) = server.get("/pipelines", Some(&forged));
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));

    let admin = sign(
        serde_json::json!({"role": "admin", "iat": now, "exp": now + 3600, "sub": "grit-token"}),
        &secret,
    );
    assert_eq!(server.get("/pipelines", Some(&admin)).0, 401);

    let (status, body) = server.get("/pipelines", Some(&viewer));
    assert_eq!(status, 200);
    let name = body["pipelines"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(name, "pipeline");

    let (status, body) = server.post(&format!("/pipelines/{name}/runs"), Some(&viewer), "{}");
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let (status, _) = server.post(&format!("/pipelines/{name}/runs"), Some(&operator), "{}");
    assert_eq!(status, 202);
}

#[test]
fn bad_requests_get_the_error_shape() {
    let (project, _gate) = gated_project();
    let server = Server::single(&project.manifest(), &project.db());
    let operator = store_token("operator", &project.db());
    let op = Some(operator.as_str());

    // A 2 MiB body is refused on its announced length, before it is sent.
    let mut stream =
        std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST /api/v1/pipelines/pipeline/runs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {operator}\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    )
    .unwrap();
    let mut answer = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    let (status, body) = server.post(
        "/pipelines/pipeline/runs",
        op,
        r#"{"params": {"region": 1}}"#,
    );
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("params.region"), "{message}");

    let (status, body) = server.post("/pipelines/pipeline/runs", op, r#"{"parms": {}}"#);
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("parms"));

    let (status, body) = server.post("/pipelines/pipeline/runs", op, r#"{"params": "#);
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    // An array is not an object, even an empty one that serde would take for no fields.
    for array in ["[]", r#"[{"region": "us"}]"#] {
        let (status, body) = server.post("/pipelines/pipeline/runs", op, array);
        assert_eq!(
            (status, error_code(&body)),
            (400, "bad_request"),
            "{array}: {body}"
        );
    }

    let (status, body) = server.post("/pipelines/nope/runs", op, "{}");
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = server.get("/runs/pipeline.999", op);
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = server.get("/runs/other.1", op);
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = server.get("/no/such/thing", op);
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, body) = server.send("PUT", "/runs", op, b"{}");
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));
    let (status, body) = server.get("/runs?status=bogus", op);
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("status")
    );
    let (status, _) = server.get("/runs?limit=0", op);
    assert_eq!(status, 400);
    let (status, _) = server.get("/runs?cursor=zz", op);
    assert_eq!(status, 400);
    // Nothing reached the wait list.
    let (_, page) = server.get("/runs", op);
    assert_eq!(page["runs"].as_array().unwrap().len(), 0, "{page}");
}

#[test]
fn queue_limit_append_replace_and_start_delay() {
    let root = tempfile::tempdir().unwrap();
    let mut config = String::from("listen = \"127.0.0.1:0\"\n");
    for (name, extra) in [
        ("append", "queue_limit = 2\n"),
        ("replace", "queue_strategy = \"replace\"\n"),
        ("debounce", "start_delay = \"1h\"\n"),
    ] {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("m.toml"), manifest(&dir)).unwrap();
        config.push_str(&format!(
            "[pipelines.{name}]\nmanifest = \"{name}/m.toml\"\ndb = \"{name}/db\"\nno_sandbox = true\n{extra}"
        ));
    }
    let file = write_config(root.path(), &config);
    let server = Server::config(&file);
    let operator = token("operator", &["--config".as_ref(), file.as_os_str()]);
    let op = Some(operator.as_str());
    let trigger = |pipeline: &str| server.post(&format!("/pipelines/{pipeline}/runs"), op, "");
    let held = |name: &str| {
        poll(&format!("{name}'s run to hold on item_b"), || {
            root.path()
                .join(name)
                .join("started-item_b")
                .exists()
                .then_some(())
        })
    };

    // append: one running, two waiting, the fourth is refused.
    let first = server.trigger("append", &operator);
    held("append");
    let (_, second) = trigger("append");
    let (_, third) = trigger("append");
    assert_eq!(second["position"], 0);
    assert_eq!(third["position"], 1);
    let (status, body) = trigger("append");
    assert_eq!((status, error_code(&body)), (429, "queue_full"));
    let (_, pipeline) = server.get("/pipelines/append", op);
    assert_eq!(pipeline["queued"], 2);
    assert_eq!(pipeline["running"].as_str(), Some(first.as_str()));
    // A queued run can be cancelled or deleted; the running one cannot be deleted.
    let third_id = third["run_id"].as_str().unwrap();
    let (status, body) = server.post(&format!("/runs/{third_id}/cancel"), op, "");
    assert_eq!((status, body["status"].as_str()), (202, Some("cancelled")));
    let second_id = second["run_id"].as_str().unwrap();
    assert_eq!(server.delete(&format!("/runs/{second_id}"), op).0, 200);
    assert_eq!(server.get(&format!("/runs/{second_id}"), op).0, 404);
    let (status, body) = server.delete(&format!("/runs/{first}"), op);
    assert_eq!((status, error_code(&body)), (409, "conflict"));

    // replace: a new trigger replaces the waiting run, never the running one.
    let running = server.trigger("replace", &operator);
    held("replace");
    let waiting = server.trigger("replace", &operator);
    let newest = server.trigger("replace", &operator);
    let (_, replaced) = server.get(&format!("/runs/{waiting}"), op);
    assert_eq!(replaced["status"], "cancelled");
    assert!(replaced["reason"].as_str().unwrap().contains("replaced by"));
    let (_, still) = server.get(&format!("/runs/{running}"), op);
    assert_eq!(still["status"], "running");

    // start_delay: triggers during the delay merge into the waiting run.
    let (_, a) = trigger("debounce");
    let (_, b) = trigger("debounce");
    assert_eq!(a["run_id"], b["run_id"]);
    assert_eq!(
        (a["merged"].as_bool(), b["merged"].as_bool()),
        (Some(false), Some(true))
    );
    let (_, waiting_run) = server.get(&format!("/runs/{}", a["run_id"].as_str().unwrap()), op);
    assert_eq!(waiting_run["status"], "queued");

    for name in ["append", "replace"] {
        Gate(root.path().join(name).join("gate")).open();
    }
    assert_eq!(
        server.wait_finished(&first, &operator)["status"],
        "succeeded"
    );
    assert_eq!(
        server.wait_finished(&running, &operator)["status"],
        "succeeded"
    );
    assert_eq!(
        server.wait_finished(&newest, &operator)["status"],
        "succeeded"
    );
    let (_, debounced) = server.get(&format!("/runs/{}", a["run_id"].as_str().unwrap()), op);
    assert_eq!(debounced["status"], "queued", "still waiting out its hour");
}

#[test]
fn cancelling_a_running_run_publishes_nothing_and_the_next_run_completes() {
    let (project, gate) = gated_project();
    let server = Server::single(&project.manifest(), &project.db());
    let operator = store_token("operator", &project.db());
    let op = Some(operator.as_str());
    let run = server.trigger("pipeline", &operator);
    poll("the run to hold on item_b", || {
        started(&project, "item_b").then_some(())
    });
    let (status, body) = server.post(&format!("/runs/{run}/cancel"), op, "");
    assert_eq!((status, body["status"].as_str()), (202, Some("cancelling")));
    let cancelled = server.wait_finished(&run, &operator);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(
        !project
            .resources(true)
            .iter()
            .any(|r| r["name"] == "done_item_b" || r["name"] == "total"),
        "a cancelled task published an output"
    );
    let (status, body) = server.post(&format!("/runs/{run}/cancel"), op, "");
    assert_eq!((status, error_code(&body)), (409, "conflict"));

    gate.open();
    let next = server.trigger("pipeline", &operator);
    assert_eq!(
        server.wait_finished(&next, &operator)["status"],
        "succeeded"
    );
    server.stop();
    assert_eq!(sorted_live(&project), reference_live());
}

#[test]
fn kill_9_mid_run_then_restart_resumes_the_run() {
    let (project, gate) = gated_project();
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\n[pipelines.p]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\njobs = 1\n",
    );
    let server = Server::config(&config);
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let run = server.trigger("p", &operator);
    poll("the run to hold on item_b", || {
        started(&project, "item_b").then_some(())
    });
    let queued_behind = server.trigger("p", &operator);
    server.stop_with(Signal::SIGKILL);

    gate.open();
    let server = Server::config(&config);
    let resumed = server.wait_finished(&run, &operator);
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert!(
        server
            .stderr()
            .contains(&format!("run {run} was interrupted"))
    );
    let after = server.wait_finished(&queued_behind, &operator);
    assert_eq!(
        (after["status"].as_str(), after["resumed"].as_bool()),
        (Some("succeeded"), Some(false))
    );
    server.stop();
    assert_eq!(sorted_live(&project), reference_live());
}

#[test]
fn sigterm_lets_the_running_run_finish() {
    let (project, gate) = gated_project();
    let server = Server::single(&project.manifest(), &project.db());
    let operator = store_token("operator", &project.db());
    let run = server.trigger("pipeline", &operator);
    poll("the run to hold on item_b", || {
        started(&project, "item_b").then_some(())
    });
    let pid = server.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    // Stopping: the socket closes, the run goes on until the gate opens.
    poll("the server to stop accepting", || {
        std::net::TcpStream::connect(server.url.trim_start_matches("http://"))
            .is_err()
            .then_some(())
    });
    gate.open();
    let status = server.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0));
    assert_eq!(sorted_live(&project), reference_live());
    let server = Server::single(&project.manifest(), &project.db());
    let (_, finished) = server.get(&format!("/runs/{run}"), Some(&operator));
    assert_eq!(
        (finished["status"].as_str(), finished["resumed"].as_bool()),
        (Some("succeeded"), Some(false)),
        "{finished}"
    );
}

#[test]
fn sigterm_cancels_the_run_after_shutdown_timeout_and_it_resumes_at_the_next_start() {
    let (project, gate) = gated_project();
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\nshutdown_timeout = \"100ms\"\n[pipelines.p]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\n",
    );
    let server = Server::config(&config);
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let run = server.trigger("p", &operator);
    poll("the run to hold on item_b", || {
        started(&project, "item_b").then_some(())
    });
    // Open streams end with the server instead of holding its stop.
    let events = server.raw_get("/events", &operator, &[]);
    assert_eq!(server.stop().code(), Some(0));
    drop(events);
    assert!(
        !project
            .resources(true)
            .iter()
            .any(|r| r["name"] == "done_item_b"),
        "the cancelled task published an output"
    );
    gate.open();
    let server = Server::config(&config);
    let resumed = server.wait_finished(&run, &operator);
    assert_eq!(
        (resumed["status"].as_str(), resumed["resumed"].as_bool()),
        (Some("succeeded"), Some(true)),
        "{resumed}"
    );
    server.stop();
    assert_eq!(sorted_live(&project), reference_live());
}

#[test]
fn runs_are_listed_newest_first_in_pages() {
    let (project, gate) = gated_project();
    gate.open();
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let operator = store_token("operator", &project.db());
    let ids: Vec<String> = (0..3)
        .map(|_| server.trigger("pipeline", &operator))
        .collect();
    for id in &ids {
        assert_eq!(server.wait_finished(id, &viewer)["status"], "succeeded");
    }
    let v = Some(viewer.as_str());
    let (status, first) = server.get("/runs?limit=2", v);
    assert_eq!(status, 200);
    let page_ids = |page: &Value| -> Vec<String> {
        page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(page_ids(&first), vec![ids[2].clone(), ids[1].clone()]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = server.get(&format!("/runs?limit=2&cursor={cursor}"), v);
    assert_eq!(page_ids(&second), vec![ids[0].clone()]);
    assert!(second["next_cursor"].is_null());
    let (_, failed) = server.get("/runs?status=failed&pipeline=pipeline", v);
    assert_eq!(page_ids(&failed), Vec::<String>::new());
    let (status, _) = server.get("/runs?pipeline=nope", v);
    assert_eq!(status, 404);
}

#[test]
fn keep_runs_drops_the_records_of_older_runs_only() {
    let (project, gate) = gated_project();
    gate.open();
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\n[pipelines.p]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\nkeep_runs = 1\n",
    );
    let server = Server::config(&config);
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let first = server.trigger("p", &operator);
    server.wait_finished(&first, &operator);
    let second = server.trigger("p", &operator);
    server.wait_finished(&second, &operator);
    let (status, _) = server.get(&format!("/runs/{first}"), Some(&operator));
    assert_eq!(status, 404, "the older record is gone");
    let (status, _) = server.get(&format!("/runs/{second}"), Some(&operator));
    assert_eq!(status, 200);
    server.stop();
    assert_eq!(
        sorted_live(&project),
        reference_live(),
        "resources untouched"
    );
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[pipelines.etl]\nmanifest = \"m.toml\"\ndb = \"db\"\nqueue_limt = 3\n",
    );
    let output = Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: {}:4:1: unknown field `queue_limt`",
            file.display()
        )),
        "{stderr}"
    );
    let output = Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["token", "--role", "viewer", "--db"])
        .arg(dir.path().join("db"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(output.stdout.is_empty());
}

#[test]
fn events_show_every_task_start_and_finish_in_order_and_resume_after_last_event_id() {
    let (project, gate) = gated_project();
    gate.open();
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let operator = store_token("operator", &project.db());
    let response = server.raw_get("/events", &viewer, &[]);
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = SseReader::new(response);
    let run = server.trigger("pipeline", &operator);
    let mut seen = Vec::new();
    while let Some(event) = events.next_event() {
        let last = event.kind == "run_finished";
        seen.push(event);
        if last {
            break;
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_queued"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    assert_eq!(seen.last().unwrap().data["status"], "succeeded");
    assert!(
        seen.windows(2).all(|w| w[1].id == w[0].id + 1),
        "ids increase by one"
    );
    assert!(seen.iter().all(|e| e.data["run_id"] == run.as_str()));
    // Every task: started, then finished; 1 split + 3 work + 1 total.
    let started: Vec<(usize, String)> = seen
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "task_started")
        .map(|(i, e)| (i, e.data["task_id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(started.len(), 5, "{kinds:?}");
    for (at, task) in &started {
        let finished = seen
            .iter()
            .position(|e| e.kind == "task_finished" && e.data["task_id"] == task.as_str())
            .unwrap_or_else(|| panic!("task {task} never finished"));
        assert!(finished > *at, "task {task} finished before it started");
    }
    // A client that saw up to run_started gets the rest again, from the backlog.
    let resume_after = seen[1].id;
    let mut again = SseReader::new(server.raw_get(
        "/events",
        &viewer,
        &[("Last-Event-ID", &resume_after.to_string())],
    ));
    for expected in &seen[2..] {
        let event = again.next_event().expect("a resumed event");
        assert_eq!((event.id, &event.kind), (expected.id, &expected.kind));
    }
}

#[test]
fn the_bearer_scheme_name_is_case_insensitive() {
    let (project, _gate) = gated_project();
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let status = |authorization: String| {
        agent
            .get(format!("{}/api/v1/pipelines", server.url))
            .header("Authorization", authorization)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(status(format!("{scheme} {viewer}")), 200, "{scheme}");
    }
    assert_eq!(status(format!("Basic {viewer}")), 401);
    assert_eq!(status(format!("Bearer{viewer}")), 401);
}

#[test]
fn after_a_restart_an_earlier_start_s_last_event_id_resumes_from_now() {
    let (project, gate) = gated_project();
    gate.open();
    // The first start: one run, and the id of its last event.
    let earlier = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let operator = store_token("operator", &project.db());
    let mut events = SseReader::new(earlier.raw_get("/events", &viewer, &[]));
    let run = earlier.trigger("pipeline", &operator);
    earlier.wait_finished(&run, &operator);
    let mut last = None;
    while let Some(event) = events.next_event() {
        let done = event.kind == "run_finished";
        last = Some(event.id);
        if done {
            break;
        }
    }
    let last = last.expect("the first start's events");
    drop(events);
    assert!(earlier.stop().success());

    // The second start: clients that come back with that id, or with a small one, or one
    // from the future, see the same events as a new client, from the first.
    let server = Server::single(&project.manifest(), &project.db());
    let fresh = SseReader::new(server.raw_get("/events", &viewer, &[]));
    let mut resumed: Vec<SseReader> = [last.to_string(), "9".into(), u64::MAX.to_string()]
        .iter()
        .map(|id| SseReader::new(server.raw_get("/events", &viewer, &[("Last-Event-ID", id)])))
        .collect();
    resumed.insert(0, fresh);
    // Two runs, so that a stream that wrongly skips a run's worth of events still gets one.
    for _ in 0..2 {
        let run = server.trigger("pipeline", &operator);
        server.wait_finished(&run, &operator);
    }
    let firsts: Vec<(u64, String)> = resumed
        .iter_mut()
        .map(|events| {
            let event = events.next_event().expect("an event");
            (event.id, event.kind)
        })
        .collect();
    assert_eq!(firsts[0].1, "run_queued", "{firsts:?}");
    assert!(
        firsts[0].0 > last,
        "ids grow across restarts: {firsts:?} after {last}"
    );
    assert!(firsts.iter().all(|f| *f == firsts[0]), "{firsts:?}");

    // An id that is not a number is still refused.
    let bad = server.raw_get("/events", &viewer, &[("Last-Event-ID", "nine")]);
    assert_eq!(bad.status().as_u16(), 400);
}

#[test]
fn a_running_task_log_is_followed_until_it_ends() {
    let (project, gate) = gated_project();
    let server = Server::single(&project.manifest(), &project.db());
    let operator = store_token("operator", &project.db());
    let run = server.trigger("pipeline", &operator);
    poll("the run to hold on item_b", || {
        started(&project, "item_b").then_some(())
    });
    let task = poll("the task of item_b in the run's tasks", || {
        let (_, tasks) = server.get(&format!("/runs/{run}/tasks"), Some(&operator));
        tasks["tasks"].as_array()?.iter().find_map(|t| {
            (t["input_name"] == "item_b" && t["state"] == "running")
                .then(|| t["task_id"].as_str().unwrap().to_string())
        })
    });
    let (status, info) = server.get(&format!("/tasks/{task}"), Some(&operator));
    assert_eq!((status, info["step"].as_str()), (200, Some("work")));
    let follow = server.raw_get(&format!("/tasks/{task}/log?follow=1"), &operator, &[]);
    assert_eq!(follow.status().as_u16(), 200);
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(follow.into_body().into_reader()));
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "working on item_b",
        "the live log, while the task runs"
    );
    gate.open();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.contains(&"the gate opened".to_string()), "{rest:?}");
    // The stream ended with the task; the stored log says the same.
    let mut stored = server.raw_get(&format!("/tasks/{task}/log"), &operator, &[]);
    let text = stored.body_mut().read_to_string().unwrap();
    assert!(
        text.starts_with("working on item_b\nthe gate opened\n"),
        "{text:?}"
    );
    assert_eq!(server.wait_finished(&run, &operator)["status"], "succeeded");
    let (status, body) = server.get("/tasks/pipeline.999/log", Some(&operator));
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

#[test]
fn a_running_task_log_without_follow_is_the_log_as_it_is_now() {
    // A task writing faster than a client reads must not keep a plain log request open until
    // the task ends: without `follow`, the answer is the log up to its length when asked.
    let project = Project::new(
        "[[step]]\nname = \"chatty\"\ntimeout = \"10s\"\n\
         script = 'while :; do head -c 1048576 /dev/zero | tr \"\\\\000\" x; sleep 0.02; done'\n",
    );
    let server = Server::single(&project.manifest(), &project.db());
    let operator = store_token("operator", &project.db());
    let run = server.trigger("pipeline", &operator);
    // More than the response's buffers hold (8 chunks of 256 KiB, and the socket's).
    let task = poll("the task to have written 8 MiB", || {
        let (_, tasks) = server.get(&format!("/runs/{run}/tasks"), Some(&operator));
        let task = tasks["tasks"].as_array()?.first()?["task_id"]
            .as_str()?
            .to_string();
        let logs = std::fs::read_dir(project.db().join("tmp")).ok()?;
        let big = logs.flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with(".log")
                && e.metadata().is_ok_and(|m| m.len() > 8 << 20)
        });
        big.then_some(task)
    });
    let mut log = server.raw_get(&format!("/tasks/{task}/log"), &operator, &[]);
    // Read slowly: about 3 MB/s, less than the task writes.
    let mut reader = log.body_mut().as_reader();
    let (mut total, mut buffer) = (0usize, vec![0u8; 64 << 10]);
    loop {
        let n = std::io::Read::read(&mut reader, &mut buffer).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (_, info) = server.get(&format!("/tasks/{task}"), Some(&operator));
    assert!(total > 8 << 20, "{total} bytes");
    assert_eq!(
        info["state"], "running",
        "the answer ended only with the task, after {total} bytes"
    );
}

#[test]
fn resource_content_is_served_verified_with_ranges_and_never_when_damaged() {
    let (project, gate) = gated_project();
    gate.open();
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let operator = store_token("operator", &project.db());
    let run = server.trigger("pipeline", &operator);
    server.wait_finished(&run, &operator);
    let (status, list) = server.get("/resources?name=done_*", Some(&viewer));
    assert_eq!(status, 200);
    assert_eq!(list["resources"].as_array().unwrap().len(), 3, "{list}");
    let (_, total) = server.get("/resources?name=total", Some(&viewer));
    let hash = total["resources"][0]["hash"].as_str().unwrap().to_string();
    let expected = project.cat(&hash);
    assert_eq!(expected, "A\nB\nC\n");

    let mut whole = server.raw_get(&format!("/resources/{}/content", &hash[..12]), &viewer, &[]);
    assert_eq!(whole.status().as_u16(), 200);
    // Saved under the resource's name, never shown as a page of the server's origin.
    assert_eq!(
        whole.headers()["content-disposition"],
        "attachment; filename=\"total\"; filename*=UTF-8''total"
    );
    assert_eq!(whole.headers()["content-type"], "application/octet-stream");
    assert_eq!(whole.headers()["x-content-type-options"], "nosniff");
    assert_eq!(whole.body_mut().read_to_string().unwrap(), expected);
    let mut part = server.raw_get(
        &format!("/resources/{hash}/content"),
        &viewer,
        &[("Range", "bytes=2-3")],
    );
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 2-3/6");
    assert_eq!(part.body_mut().read_to_string().unwrap(), "B\n");
    let beyond = server.raw_get(
        &format!("/resources/{hash}/content"),
        &viewer,
        &[("Range", "bytes=100-")],
    );
    assert_eq!(beyond.status().as_u16(), 416);

    let (status, why) = server.get(&format!("/resources/{hash}"), Some(&viewer));
    assert_eq!(status, 200);
    assert_eq!(why["resources"][0]["made_by"][0]["step"], "total", "{why}");

    // Same size, other bytes: the object is damaged, and none of it is served.
    let object = project.object_path(&hash);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&object, "X\nY\nZ\n").unwrap();
    let (status, body) = server.get(&format!("/resources/{hash}/content"), Some(&viewer));
    assert_eq!(
        (status, error_code(&body)),
        (500, "store_damaged"),
        "{body}"
    );
    assert!(!body.to_string().contains("X\\nY"));
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        message.matches("grit verify").count(),
        1,
        "the help comes once: {message}"
    );
    assert!(message.contains("grit verify --repair"), "{message}");
}

#[test]
fn metrics_count_runs_and_tasks() {
    let (project, gate) = gated_project();
    gate.open();
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let operator = store_token("operator", &project.db());
    let run = server.trigger("pipeline", &operator);
    server.wait_finished(&run, &operator);
    let mut response = server.raw_get("/metrics", &viewer, &[]);
    assert_eq!(response.status().as_u16(), 200);
    let text = response.body_mut().read_to_string().unwrap();
    for line in [
        "grit_serve_runs_total{pipeline=\"pipeline\",status=\"succeeded\"} 1",
        "grit_serve_tasks_total{pipeline=\"pipeline\",result=\"succeeded\"} 5",
        "grit_serve_queue_length{pipeline=\"pipeline\"} 0",
        "grit_serve_runs_running{pipeline=\"pipeline\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let (status, _) = server.get("/metrics", None);
    assert_eq!(status, 401);
}

/// The runs of `pipeline` with this trigger.
fn runs_by(server: &Server, token: &str, pipeline: &str, trigger: &str) -> Vec<Value> {
    let (_, page) = server.get(&format!("/runs?pipeline={pipeline}&limit=500"), Some(token));
    page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == trigger)
        .cloned()
        .collect()
}

#[test]
fn schedules_fire_and_ticks_missed_while_down_run_once_at_start() {
    let (project, gate) = gated_project();
    gate.open();
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\n\
         [pipelines.hourly]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\nschedule = [\"every 1h\"]\n\
         [pipelines.often]\nmanifest = \"pipeline.toml\"\ndb = \"often-db\"\nno_sandbox = true\n\
         schedule = [\"every 1s\"]\nqueue_strategy = \"replace\"\n",
    );
    let server = Server::config(&config);
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    // A short interval fires.
    let fired = poll("a scheduled run of `often`", || {
        runs_by(&server, &operator, "often", "schedule")
            .into_iter()
            .next()
    });
    server.wait_finished(fired["run_id"].as_str().unwrap(), &operator);
    // An hourly entry seen for the first time starts counting: no run.
    let database = project.db().join("grit.sqlite");
    let last_fire = || -> Option<i64> {
        let conn = rusqlite::Connection::open(&database).ok()?;
        conn.query_row(
            "SELECT last_fire_ms FROM serve_schedule WHERE pipeline = 'hourly'",
            [],
            |r| r.get(0),
        )
        .ok()
    };
    let first_seen = poll("the hourly entry to be recorded", last_fire);
    assert!(runs_by(&server, &operator, "hourly", "schedule").is_empty());
    server.stop();

    // Down for three hours (as far as the store knows): one run at start-up, not three.
    let conn = rusqlite::Connection::open(&database).unwrap();
    conn.execute(
        "UPDATE serve_schedule SET last_fire_ms = ?1 WHERE pipeline = 'hourly'",
        [first_seen - 3 * 3_600_000],
    )
    .unwrap();
    drop(conn);
    let server = Server::config(&config);
    let missed = poll("the run for the missed ticks", || {
        runs_by(&server, &operator, "hourly", "schedule")
            .into_iter()
            .next()
    });
    assert_eq!(
        server.wait_finished(missed["run_id"].as_str().unwrap(), &operator)["status"],
        "succeeded"
    );
    poll("the entry to be fired now", || {
        last_fire().filter(|&ms| ms >= first_seen).map(|_| ())
    });
    assert_eq!(runs_by(&server, &operator, "hourly", "schedule").len(), 1);
}

/// A server with one pipeline `w` in `dir` whose step `shout` upper-cases every `*.txt` input
/// into `loud_<name>`, watching `watch` (TOML array items), and an operator's token for it.
fn watching(dir: &Path, watch: &str) -> (Server, String) {
    std::fs::write(
        dir.join("m.toml"),
        "[[step]]\nname = \"shout\"\ninputs = [\"*.txt\"]\n\
         script = 'tr a-z A-Z < \"$INPUT_FILE\" > \"$OUTPUT_DIR/loud_${GRIT_INPUT_NAME%.txt}\"'\n",
    )
    .unwrap();
    let config = write_config(
        dir,
        &format!(
            "listen = \"127.0.0.1:0\"\n[pipelines.w]\nmanifest = \"m.toml\"\ndb = \"db\"\n\
             no_sandbox = true\nwatch = [{watch}]\n"
        ),
    );
    let server = Server::config(&config);
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    (server, operator)
}

#[test]
fn watch_ingests_a_changed_file_and_an_unchanged_touch_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let (server, operator) = watching(dir.path(), "\"incoming\"");
    let op = Some(operator.as_str());
    std::fs::write(incoming.join("a.txt"), "hello\n").unwrap();
    let run = poll("a run queued by the watch", || {
        runs_by(&server, &operator, "w", "watch").into_iter().next()
    });
    let run = server.wait_finished(run["run_id"].as_str().unwrap(), &operator);
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, loud) = server.get("/resources?name=loud_a", op);
    let hash = loud["resources"][0]["hash"]
        .as_str()
        .expect("loud_a")
        .to_string();
    let mut content = server.raw_get(&format!("/resources/{hash}/content"), &operator, &[]);
    assert_eq!(content.body_mut().read_to_string().unwrap(), "HELLO\n");

    // Rewritten with the same bytes: looked at, nothing queued.
    std::fs::write(incoming.join("a.txt"), "hello\n").unwrap();
    poll("the watch to look at the unchanged file", || {
        server
            .stderr()
            .contains("the same content as before: no run queued")
            .then_some(())
    });
    assert_eq!(runs_by(&server, &operator, "w", "watch").len(), 1);
    // New bytes: another run.
    std::fs::write(incoming.join("a.txt"), "again\n").unwrap();
    poll("a second run queued by the watch", || {
        (runs_by(&server, &operator, "w", "watch").len() == 2).then_some(())
    });
}

/// The content of the live resource `name` of the server's only pipeline, if there is one.
fn live_content(server: &Server, token: &str, name: &str) -> Option<String> {
    let (_, found) = server.get(&format!("/resources?name={name}"), Some(token));
    let hash = found["resources"].as_array()?.first()?["hash"].as_str()?;
    let mut content = server.raw_get(&format!("/resources/{hash}/content"), token, &[]);
    content.body_mut().read_to_string().ok()
}

#[test]
fn a_watched_file_replaced_by_a_rename_stays_watched() {
    let dir = tempfile::tempdir().unwrap();
    let (file, wdir) = (dir.path().join("wfile.txt"), dir.path().join("wdir"));
    std::fs::write(&file, "v1\n").unwrap();
    std::fs::create_dir(&wdir).unwrap();
    let (server, operator) = watching(dir.path(), "\"wfile.txt\", \"wdir\"");
    let ingested = |name: &str, content: &str| {
        poll(&format!("{name} ingested with {content:?}"), || {
            (live_content(&server, &operator, name).as_deref() == Some(content)).then_some(())
        })
    };
    // Replaced the way editors and `sed -i` do: a new file renamed over the old one.
    std::fs::write(dir.path().join("wfile.txt.tmp"), "v3\n").unwrap();
    std::fs::rename(dir.path().join("wfile.txt.tmp"), &file).unwrap();
    ingested("wfile.txt", "v3\n");
    // The new file is watched as well.
    std::fs::write(&file, "v4\n").unwrap();
    ingested("wfile.txt", "v4\n");
    // The directory is watched as before; the file's neighbours are not.
    std::fs::write(dir.path().join("neighbour.txt"), "no\n").unwrap();
    std::fs::write(wdir.join("inner.txt"), "in\n").unwrap();
    ingested("inner.txt", "in\n");
    std::fs::write(&file, "v5\n").unwrap();
    ingested("wfile.txt", "v5\n");
    for name in ["neighbour.txt", "wfile.txt.tmp"] {
        assert_eq!(live_content(&server, &operator, name), None, "{name}");
    }
}

#[test]
fn links_and_fifos_in_a_watched_directory_are_not_ingested_and_hang_nothing() {
    // Whoever may write into a watched directory must not make the server read a file they
    // cannot (a link to its token secret, to /etc/shadow), nor hang its worker with a FIFO.
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "SECRET\n").unwrap();
    let (server, operator) = watching(dir.path(), "\"incoming\"");
    std::os::unix::fs::symlink(outside.join("secret.txt"), incoming.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, incoming.join("linked-dir")).unwrap();
    nix::unistd::mkfifo(&incoming.join("fifo.txt"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A new directory is part of the watch, not a file to warn about.
    std::fs::create_dir(incoming.join("newdir.txt")).unwrap();
    // Touched through the links, so that the change is seen at the link's path too.
    std::fs::write(outside.join("secret.txt"), "SECRET\n").unwrap();
    std::fs::write(incoming.join("linked-dir").join("via.txt"), "VIA\n").unwrap();
    // A real file after them: once it is live, the others were looked at and refused.
    std::fs::write(incoming.join("real.txt"), "real\n").unwrap();
    poll("real.txt ingested", || {
        (live_content(&server, &operator, "real.txt").as_deref() == Some("real\n")).then_some(())
    });
    for name in ["link.txt", "secret.txt", "fifo.txt", "via.txt"] {
        assert_eq!(live_content(&server, &operator, name), None, "{name}");
    }
    poll("the refusals logged", || {
        let said = server.stderr();
        (said.contains("link.txt not ingested: a symbolic link")
            && said.contains("fifo.txt not ingested: not a regular file"))
        .then_some(())
    });
    assert!(
        !server.stderr().contains("newdir.txt not ingested"),
        "{}",
        server.stderr()
    );
    // The worker is not stuck: a later change still gets a run.
    std::fs::write(incoming.join("later.txt"), "later\n").unwrap();
    poll("later.txt ingested", || {
        (live_content(&server, &operator, "later.txt").as_deref() == Some("later\n")).then_some(())
    });
}

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_is_bad() {
    let (project, _gate) = gated_project();
    let good = |limit: u32| {
        format!(
            "listen = \"127.0.0.1:0\"\n[pipelines.p]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\nqueue_limit = {limit}\n"
        )
    };
    let config = write_config(project.path(), &good(1));
    let server = Server::config(&config);
    let viewer = token("viewer", &["--config".as_ref(), config.as_os_str()]);
    let limit = || {
        let (_, body) = server.get("/pipelines/p", Some(&viewer));
        body["queue_limit"].as_u64()
    };
    assert_eq!(limit(), Some(1));
    let hup = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGHUP).unwrap()
    };
    std::fs::write(
        &config,
        good(1).replace("queue_limit = 1", "queue_limit = \"many\""),
    )
    .unwrap();
    hup();
    poll("the bad reload to be logged", || {
        server
            .stderr()
            .contains("the config was not reloaded, the old one stays")
            .then_some(())
    });
    assert!(
        server.stderr().contains("server.toml:6:15"),
        "{}",
        server.stderr()
    );
    assert_eq!(limit(), Some(1));
    std::fs::write(&config, good(5)).unwrap();
    hup();
    poll("the new queue_limit", || (limit() == Some(5)).then_some(()));
}

/// Run parameters over HTTP: a trigger's `params` reach the scripts of the steps that list them
/// and are part of their identity (the same value again runs nothing); an undeclared name is the
/// request's 400, and nothing is queued.
#[test]
fn trigger_params_reach_the_scripts_and_unknown_ones_are_refused() {
    let project = Project::new(
        r#"
[pipeline.params]
region = { default = "eu" }

[[step]]
name = "where"
once = true
params = ["region"]
script = 'echo "region=$GRIT_PARAM_REGION" > "$OUTPUT_DIR/where"'
"#,
    );
    let db = project.path().join("db");
    let server = Server::single(&project.manifest(), &db);
    let operator = store_token("operator", &db);
    let run_with = |body: &str| {
        let (status, queued) = server.post("/pipelines/pipeline/runs", Some(&operator), body);
        assert_eq!(status, 202, "{queued}");
        let id = queued["run_id"].as_str().expect("run_id").to_string();
        server.wait_finished(&id, &operator)
    };
    let first = run_with(r#"{"params": {"region": "us"}}"#);
    assert_eq!(first["status"], "succeeded", "{first}");
    let (status, resources) = server.get("/resources?name=where", Some(&operator));
    assert_eq!(status, 200, "{resources}");
    let hash = resources["resources"][0]["hash"]
        .as_str()
        .expect("a live `where`")
        .to_string();
    let mut content = server.raw_get(&format!("/resources/{hash}/content"), &operator, &[]);
    assert_eq!(
        content.body_mut().read_to_string().unwrap().trim(),
        "region=us"
    );

    let executed = |run: &Value| -> u64 {
        run["steps"]
            .as_array()
            .expect("per-step counts")
            .iter()
            .map(|s| s["succeeded"].as_u64().unwrap_or(0) + s["failed"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(executed(&first), 1, "{first}");
    // The same value again: memoised, nothing runs; another value runs.
    let again = run_with(r#"{"params": {"region": "us"}}"#);
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(executed(&again), 0, "{again}");
    let other = run_with("{}");
    assert_eq!(
        executed(&other),
        1,
        "the default `eu` is another value: {other}"
    );

    let (status, refused) = server.post(
        "/pipelines/pipeline/runs",
        Some(&operator),
        r#"{"params": {"regoin": "us"}}"#,
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "bad_params", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("regoin"),
        "{refused}"
    );
    server.stop();
}

/// The routes of `fn v1` in `src/serve/api/mod.rs` (every route under `/api/v1`), as
/// `(METHOD, /api/v1/PATH)`: read from the router's source so that a route added there without
/// documentation fails [`the_openapi_document_lists_every_route_and_is_the_committed_copy`].
fn router_routes() -> Vec<(String, String)> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/serve/api/mod.rs"))
            .expect("read the router's source");
    let start = source
        .find("fn v1(")
        .expect("fn v1 in src/serve/api/mod.rs");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("the end of fn v1")];
    let mut routes = Vec::new();
    for call in body.split(".route(").skip(1) {
        let path = call.split('"').nth(1).expect("a route's path literal");
        // The method router: up to the `)` closing `.route(`.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a closed .route(");
        let methods = &call[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = methods.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0
                    || !methods.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && methods.as_bytes()[i - 1] != b'_'
            });
            if called {
                routes.push((method.to_uppercase(), format!("/api/v1{path}")));
            }
        }
    }
    routes.sort();
    routes
}

#[test]
fn the_openapi_document_lists_every_route_and_is_the_committed_copy() {
    let (project, gate) = gated_project();
    gate.open();
    let server = Server::single(&project.manifest(), &project.db());
    // Served without a token, like /healthz.
    let mut response = ureq::get(format!("{}/api/v1/openapi.json", server.url))
        .call()
        .expect("GET /openapi.json");
    assert_eq!(response.status(), 200);
    let text = response.body_mut().read_to_string().unwrap();
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    let routes = router_routes();
    assert!(routes.len() >= 17, "{routes:?}");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    assert_eq!(
        documented, routes,
        "the OpenAPI document (left) must list exactly the router's routes (right)"
    );

    // Each documented operation: the error shape for its errors, a bearer requirement unless
    // public, and the route really answers (not the 404 of an unknown endpoint).
    let operator = store_token("operator", &project.db());
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let public = path.ends_with("/healthz") || path.ends_with("/openapi.json");
        assert_eq!(
            operation["security"].is_null(),
            public,
            "{method} {path}: security {}",
            operation["security"]
        );
        for (status, response) in operation["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        if !public {
            assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        }
        let concrete = path
            .replace("{name}", "pipeline")
            .replace("{id}", "pipeline.1")
            .replace("{hash}", "00000000")
            .replace("/api/v1", "");
        if path.ends_with("/events") {
            continue; // A stream: answered with 200 and never ends.
        }
        let body = (method == "POST").then_some(b"{}".as_slice());
        let (status, body) = server.request(method, &concrete, Some(&operator), body);
        let unknown_endpoint = status == 404 && body.contains("no such endpoint");
        assert!(
            !unknown_endpoint && status != 405,
            "{method} {path}: {status} {body}"
        );
        assert!(
            operation["responses"][status.to_string()].is_object(),
            "{method} {path}: {status} is not documented: {body}"
        );
    }
    let schema = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        schema["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );

    // docs/openapi.json is what the server serves.
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"))
            .expect("docs/openapi.json");
    assert!(
        committed.trim_end() == text.trim_end(),
        "docs/openapi.json is not what the server serves: regenerate it with\n  \
         curl -s http://127.0.0.1:9009/api/v1/openapi.json > docs/openapi.json"
    );
}

/// Status line and body of a raw HTTP/1.1 answer read to its end (`Connection: close`).
fn raw_answer(mut stream: impl std::io::Read) -> (u16, String) {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // A chunked answer: the JSON is the first chunk.
    let body = match body.split_once("\r\n") {
        Some((size, rest))
            if u64::from_str_radix(size.trim(), 16).is_ok() && !body.starts_with('{') =>
        {
            rest.split("\r\n").next().unwrap_or("").to_string()
        }
        _ => body.to_string(),
    };
    (status, body)
}

#[test]
fn a_slow_request_times_out_with_the_error_shape_and_streams_are_exempt() {
    let (project, gate) = gated_project();
    gate.open();
    // The manifest is a FIFO: reading it blocks until the test writes it, like a manifest on a
    // hung network filesystem, so `GET /pipelines/{name}` (which reads it) is slow for real.
    let fifo = project.path().join("slow.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\nrequest_timeout = \"300ms\"\n\
         [pipelines.slow]\nmanifest = \"slow.toml\"\ndb = \"db\"\nno_sandbox = true\n",
    );
    let server = Server::config(&config);
    let viewer = token("viewer", &["--config".as_ref(), config.as_os_str()]);

    // A stream outlives the timeout: subscribe now, see an event only after it passed.
    let events = server.raw_get("/events", &viewer, &[]);
    assert_eq!(events.status(), 200);
    let mut events = SseReader::new(events);

    let started = std::time::Instant::now();
    let (status, body) = server.get("/pipelines/slow", Some(&viewer));
    assert_eq!(
        (status, error_code(&body)),
        (408, "request_timeout"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request_timeout (300ms)"),
        "{body}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    // The server still answers others meanwhile.
    let (status, _) = server.get("/runs", Some(&viewer));
    assert_eq!(status, 200);

    // Unblock the reader, and put a plain manifest in the FIFO's place.
    let manifest = "[[step]]\nname = \"a\"\nonce = true\nscript = 'true'\n";
    std::fs::write(&fifo, manifest).unwrap();
    std::fs::remove_file(&fifo).unwrap();
    std::fs::write(&fifo, manifest).unwrap();
    // The stream opened before the timeout still runs: it sees the next run queued.
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let id = server.trigger("slow", &operator);
    let event = events.next_event().expect("an event after the timeout");
    assert_eq!(event.kind, "run_queued", "{event:?}");
    assert_eq!(event.data["run_id"], id);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let run = server.wait_finished(&id, &operator);
    assert_eq!(run["status"], "succeeded", "{run}");
    drop(events);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn a_chunked_body_over_1_mib_is_refused_with_413_and_the_error_shape() {
    let (project, _gate) = gated_project();
    let server = Server::single(&project.manifest(), &project.db());
    let operator = store_token("operator", &project.db());
    let mut stream =
        std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST /api/v1/pipelines/pipeline/runs HTTP/1.1\r\nHost: test\r\n\
         Authorization: Bearer {operator}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // 2 MiB of a JSON string in 64 KiB chunks, no Content-Length: the server learns the size
    // only by reading. It may answer and close before all is sent.
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    for _ in 0..32 {
        if write!(stream, "{:x}\r\n", chunk.len()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let (status, body) = raw_answer(&stream);
    assert_eq!(status, 413, "after {sent} bytes: {body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body:?}"));
    assert_eq!(error_code(&body), "payload_too_large");
    // Nothing was queued.
    let (_, page) = server.get("/runs", Some(&operator));
    assert_eq!(page["runs"].as_array().unwrap().len(), 0, "{page}");
}

#[test]
fn a_unix_socket_serves_requests_and_only_its_owner_and_group_may_connect() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let (project, gate) = gated_project();
    gate.open();
    let socket = project.path().join("api.sock");
    let config = write_config(
        project.path(),
        &format!(
            "listen = \"unix:{}\"\n[pipelines.p]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\n",
            socket.display()
        ),
    );
    let server = Server::config(&config);
    assert_eq!(server.url, format!("unix:{}", socket.display()));
    let meta = std::fs::metadata(&socket).expect("the socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "{:o}",
        meta.permissions().mode()
    );

    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let ask = |request: String| {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        stream.write_all(request.as_bytes()).unwrap();
        raw_answer(stream)
    };
    let (status, body) = ask(format!(
        "POST /api/v1/pipelines/p/runs HTTP/1.1\r\nHost: grit\r\nAuthorization: Bearer {operator}\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    ));
    assert_eq!(status, 202, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["run_id"], "p.1");
    let finished = poll("the run over the unix socket", || {
        let (status, body) = ask(format!(
            "GET /api/v1/runs/p.1 HTTP/1.1\r\nHost: grit\r\nAuthorization: Bearer {operator}\r\n\
             Connection: close\r\n\r\n"
        ));
        assert_eq!(status, 200, "{body}");
        let run: Value = serde_json::from_str(&body).unwrap();
        (run["status"] == "succeeded").then_some(run)
    });
    assert_eq!(finished["run_id"], "p.1");
    let (status, body) =
        ask("GET /api/v1/runs HTTP/1.1\r\nHost: grit\r\nConnection: close\r\n\r\n".into());
    assert_eq!(status, 401, "{body}");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn a_socket_passed_by_systemd_is_used_instead_of_listen() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (project, gate) = gated_project();
    gate.open();
    // `listen` names a port the server must not use: the passed socket wins.
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:1\"\n[pipelines.p]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\nno_sandbox = true\n",
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    // As systemd does: the socket is fd 3 of the server, LISTEN_FDS=1, and LISTEN_PID its own
    // pid, which only the child knows: `sh` exports its own pid and execs grit in its place.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --config \"$1\"")
        .arg(assert_cmd::cargo::cargo_bin("grit"))
        .arg(&config);
    // SAFETY: only dup2 and fcntl, which are async-signal-safe, run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                let flags = nix::libc::fcntl(3, nix::libc::F_GETFD);
                nix::libc::fcntl(3, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC);
            } else if nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::spawn(command);
    assert_eq!(
        server.url,
        format!("http://{address}"),
        "{}",
        server.stderr()
    );
    drop(listener); // The server holds its own copy.
    let (status, body) = server.get("/healthz", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let id = server.trigger("p", &operator);
    let run = server.wait_finished(&id, &operator);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn a_token_secret_that_is_too_short_is_a_usage_error() {
    let (project, _gate) = gated_project();
    std::fs::write(project.path().join("secret"), "short").unwrap();
    let config = write_config(
        project.path(),
        "listen = \"127.0.0.1:0\"\ntoken_secret_file = \"secret\"\n\
         [pipelines.p]\nmanifest = \"pipeline.toml\"\ndb = \"db\"\n",
    );
    for args in [
        vec!["serve", "--config"],
        vec!["token", "--role", "viewer", "--config"],
    ] {
        let output = Command::new(assert_cmd::cargo::cargo_bin("grit"))
            .args(&args)
            .arg(&config)
            .output()
            .expect("grit");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("holds 5 bytes, fewer than 16") && stderr.contains("delete it"),
            "{args:?}: {stderr}"
        );
    }
}

/// A resource of `SIZE` zero bytes, stored by a plain run, and the path of its object.
fn big_object(size: u64) -> (Project, String, std::path::PathBuf) {
    let project = Project::new(&format!(
        "[[step]]\nname = \"make\"\nonce = true\nscript = 'head -c {size} /dev/zero > \"$OUTPUT_DIR/blob\"'\n"
    ));
    project.run_ok(&[]);
    let hash = project.live()[0].1.clone();
    let object = project.object_path(&hash);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o600)).unwrap();
    (project, hash, object)
}

/// Overwrite the first 16 bytes of `object` (with `text`, or zeros back).
fn overwrite_start(object: &Path, text: &[u8; 16]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(object)
        .unwrap();
    file.write_all_at(text, 0).unwrap();
}

#[test]
fn an_object_changed_while_it_is_served_is_never_delivered_as_a_clean_answer() {
    const SIZE: u64 = 1 << 30;
    let (project, hash, object) = big_object(SIZE);
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let path = format!("/resources/{hash}/content");
    for range in [Some("bytes=0-15"), None] {
        // The object changes while the server checks it before the headers (a 1 GiB hash takes
        // most of a second), after that check has read the changed bytes' old value.
        let answer = std::thread::scope(|scope| {
            let asked = scope.spawn(|| {
                let headers: Vec<(&str, &str)> =
                    range.map(|r| vec![("Range", r)]).unwrap_or_default();
                let mut response = server.raw_get(&path, &viewer, &headers);
                let status = response.status().as_u16();
                let mut body = Vec::new();
                let read = std::io::Read::read_to_end(
                    &mut response.body_mut().with_config().limit(SIZE + 1).reader(),
                    &mut body,
                );
                (status, read.is_ok(), body)
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            overwrite_start(&object, b"EVIL-BYTES-HERE!");
            asked.join().unwrap()
        });
        let (status, clean, body) = answer;
        let expected = if range.is_some() { 16 } else { SIZE as usize };
        // Refused (500), or cut: never the new bytes as a clean, complete answer.
        if clean && matches!(status, 200 | 206) && body.len() == expected {
            assert!(
                !body.starts_with(b"EVIL"),
                "{range:?}: changed bytes served as a clean {status}"
            );
        }
        overwrite_start(&object, &[0; 16]);
    }
}

#[test]
fn sigterm_ends_the_server_while_a_client_is_slow_to_read_a_download() {
    let (project, hash, _) = big_object(256 << 20);
    let server = Server::single(&project.manifest(), &project.db());
    let viewer = store_token("viewer", &project.db());
    let mut response = server.raw_get(&format!("/resources/{hash}/content"), &viewer, &[]);
    assert_eq!(response.status().as_u16(), 200);
    let mut first = [0u8; 4096];
    std::io::Read::read_exact(&mut response.body_mut().as_reader(), &mut first).unwrap();
    // The client reads no more; the server must still stop.
    let stopping = std::time::Instant::now();
    let status = server.stop();
    assert!(status.success(), "{status}");
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(20),
        "stopping took {:?}",
        stopping.elapsed()
    );
    drop(response);
}

#[test]
fn a_cancel_that_comes_as_the_run_starts_cancels_it() {
    let (project, gate) = gated_project();
    gate.open();
    // The worker waits between claiming the run (its record says `running`) and starting it.
    let server = Server::single_with_env(
        &project.manifest(),
        &project.db(),
        &[("GRIT_TEST_CLAIM_DELAY_MS", "1500")],
    );
    let operator = store_token("operator", &project.db());
    let run = server.trigger("pipeline", &operator);
    server.wait_run(&run, &operator, "claimed", |r| r["status"] == "running");
    let (status, body) = server.post(&format!("/runs/{run}/cancel"), Some(&operator), "");
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("cancelling")),
        "{body}"
    );
    let ended = server.wait_finished(&run, &operator);
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(
        !project.resources(true).iter().any(|r| r["name"] == "total"),
        "the cancelled run published"
    );
    server.stop();
}

#[test]
fn a_trigger_merged_into_a_waiting_run_keeps_an_earlier_trigger_s_params() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("p");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("m.toml"),
        r#"
[pipeline.params]
region = { default = "eu" }
size = { default = "s" }

[[step]]
name = "where"
once = true
params = ["region", "size"]
script = 'echo "$GRIT_PARAM_REGION $GRIT_PARAM_SIZE" > "$OUTPUT_DIR/where"'
"#,
    )
    .unwrap();
    let file = write_config(
        root.path(),
        "listen = \"127.0.0.1:0\"\n[pipelines.p]\nmanifest = \"p/m.toml\"\ndb = \"p/db\"\n\
         no_sandbox = true\nstart_delay = \"2s\"\nparams = { region = \"eu\", size = \"m\" }\n",
    );
    let server = Server::config(&file);
    let operator = token("operator", &["--config".as_ref(), file.as_os_str()]);
    let op = Some(operator.as_str());
    let (status, first) = server.post("/pipelines/p/runs", op, r#"{"params": {"region": "us"}}"#);
    assert_eq!(status, 202, "{first}");
    // A later trigger without `region` (a schedule's, or a client's without params) merges in:
    // the configured default must not undo the first trigger's value, while its own `size` wins.
    let (status, second) = server.post("/pipelines/p/runs", op, r#"{"params": {"size": "l"}}"#);
    assert_eq!(
        (status, second["merged"].as_bool()),
        (202, Some(true)),
        "{second}"
    );
    let run = first["run_id"].as_str().unwrap();
    let ended = server.wait_finished(run, &operator);
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["params"]["region"], "us", "{ended}");
    assert_eq!(ended["params"]["size"], "l", "{ended}");
    let (_, resources) = server.get("/resources?name=where&pipeline=p", op);
    let hash = resources["resources"][0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let mut content = server.raw_get(
        &format!("/resources/{hash}/content?pipeline=p"),
        &operator,
        &[],
    );
    assert_eq!(content.body_mut().read_to_string().unwrap(), "us l\n");
}

#[test]
fn a_run_cancelled_while_it_waits_is_announced_finished_and_counted() {
    let (project, gate) = gated_project();
    let server = Server::single(&project.manifest(), &project.db());
    let operator = store_token("operator", &project.db());
    let op = Some(operator.as_str());
    let mut events = SseReader::new(server.raw_get("/events", &operator, &[]));
    let running = server.trigger("pipeline", &operator);
    poll("the run to hold on item_b", || {
        started(&project, "item_b").then_some(())
    });
    let waiting = server.trigger("pipeline", &operator);
    let (status, body) = server.post(&format!("/runs/{waiting}/cancel"), op, "");
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("cancelled")),
        "{body}"
    );
    let deleted = server.trigger("pipeline", &operator);
    let (status, body) = server.delete(&format!("/runs/{deleted}"), op);
    assert_eq!(status, 200, "{body}");
    let mut finished = Vec::new();
    while finished.len() < 2 {
        let event = events.next_event().expect("the event stream ended");
        if event.kind == "run_finished" {
            assert_eq!(event.data["status"], "cancelled", "{:?}", event.data);
            finished.push(
                event.data["run_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    assert_eq!(finished, [waiting, deleted]);
    let mut response = server.raw_get("/metrics", &operator, &[]);
    assert_eq!(response.status().as_u16(), 200);
    let metrics = response.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("grit_serve_runs_total{pipeline=\"pipeline\",status=\"cancelled\"} 2"),
        "{metrics}"
    );
    gate.open();
    assert_eq!(
        server.wait_finished(&running, &operator)["status"],
        "succeeded"
    );
    server.stop();
}
