//! A real `grit serve` on a random loopback port, for the serve tests: started through the
//! binary, found through the address it prints, spoken to over real HTTP, stopped by signal.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Long enough for a slow CI machine; polls end as soon as the condition holds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Poll `check` every 20 ms until it gives a value, or panic after [`PATIENCE`] naming `what`.
pub fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    stderr: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

impl Server {
    /// `grit serve ARGS` (ARGS must make it listen on 127.0.0.1:0).
    pub fn start(args: &[&std::ffi::OsStr]) -> Server {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("grit"));
        command.arg("serve").args(args);
        Server::spawn(command)
    }

    /// Start `command` (a `grit serve`, perhaps through a wrapper) and wait until it says where
    /// it listens: `url` is `http://HOST:PORT`, or `unix:/PATH` for a unix socket.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command
            .env_remove("GRIT_DB")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start grit serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            stderr,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(PATIENCE))
                .build()
                .into(),
        };
        let url = poll("the server's address on stderr", || {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "grit serve exited with {status} before listening:\n{}",
                    server.stderr()
                );
            }
            let text = server.stderr();
            let line = text.lines().find(|l| l.contains("listening on "))?;
            Some(line.rsplit(' ').next()?.to_string())
        });
        server.url = url;
        server
    }

    /// `grit serve -m MANIFEST --db DB --no-sandbox` on a random port.
    pub fn single(manifest: &Path, db: &Path) -> Server {
        Server::single_with_env(manifest, db, &[])
    }

    /// [`Server::single`] with extra environment variables (the `GRIT_TEST_*` hooks).
    pub fn single_with_env(manifest: &Path, db: &Path, env: &[(&str, &str)]) -> Server {
        Server::spawn(Server::single_command(manifest, db, env))
    }

    /// The command [`Server::single_with_env`] starts, for a test that changes it further.
    pub fn single_command(manifest: &Path, db: &Path, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("grit"));
        command
            .arg("serve")
            .arg("-m")
            .arg(manifest)
            .arg("--db")
            .arg(db)
            .args(["--listen", "127.0.0.1:0", "--no-sandbox"])
            .envs(env.iter().copied());
        command
    }

    /// `grit serve --config FILE`.
    pub fn config(file: &Path) -> Server {
        Server::start(&["--config".as_ref(), file.as_os_str()])
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> (u16, Value) {
        let mut response =
            response.unwrap_or_else(|e| panic!("request failed: {e}\n{}", self.stderr()));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("status {status}: not JSON: {text:?}"));
        (status, value)
    }

    /// `METHOD /api/v1PATH` with an optional token and body; the status and the body as text.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}/api/v1{path}", self.url));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(body.unwrap_or_default().to_vec())
            .expect("a request");
        let mut response = self
            .agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.stderr()));
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.agent.get(format!("{}/api/v1{path}", self.url));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.answer(request.call())
    }

    pub fn send(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.url);
        let mut request = match method {
            "POST" => self.agent.post(url),
            "PUT" => self.agent.put(url),
            other => panic!("method {other}"),
        };
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request = request.header("Content-Type", "application/json");
        self.answer(request.send(body))
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        self.send("POST", path, token, body.as_bytes())
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.agent.delete(format!("{}/api/v1{path}", self.url));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.answer(request.call())
    }

    /// `GET` with extra headers, the answer unread (for streams, ranges and raw bodies).
    pub fn raw_get(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> ureq::http::Response<ureq::Body> {
        let mut request = self
            .agent
            .get(format!("{}/api/v1{path}", self.url))
            .header("Authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.stderr()))
    }

    /// Trigger `pipeline` as an operator; returns the run id.
    pub fn trigger(&self, pipeline: &str, token: &str) -> String {
        let (status, body) = self.post(&format!("/pipelines/{pipeline}/runs"), Some(token), "");
        assert_eq!(status, 202, "trigger: {body}");
        body["run_id"].as_str().expect("run_id").to_string()
    }

    /// Poll `GET /runs/{id}` until `done` holds; returns that run.
    pub fn wait_run(
        &self,
        id: &str,
        token: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        poll(&format!("run {id}: {what}"), || {
            let (status, run) = self.get(&format!("/runs/{id}"), Some(token));
            assert_eq!(status, 200, "GET /runs/{id}: {run}");
            done(&run).then_some(run)
        })
    }

    /// Poll until run `id` has ended; returns it.
    pub fn wait_finished(&self, id: &str, token: &str) -> Value {
        self.wait_run(id, token, "finished", |run| {
            !matches!(run["status"].as_str(), Some("queued" | "running"))
        })
    }

    /// Send `signal` and wait for the server to exit.
    pub fn stop_with(mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .expect("signal the server");
        poll("the server to exit", || child.try_wait().expect("wait"))
    }

    /// SIGTERM and wait.
    pub fn stop(self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `grit token --role ROLE ARGS` through the binary.
pub fn token(role: &str, args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["token", "--role", role])
        .args(args)
        .output()
        .expect("grit token");
    assert!(
        output.status.success(),
        "grit token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// The token of a one-pipeline server on `db`.
pub fn store_token(role: &str, db: &Path) -> String {
    token(role, &["--db".as_ref(), db.as_os_str()])
}

/// A file that scripts wait for: the test opens the gate when it wants a task to finish.
pub struct Gate(pub PathBuf);

impl Gate {
    pub fn open(&self) {
        std::fs::write(&self.0, "open").expect("open the gate");
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: u64,
    pub kind: String,
    pub data: Value,
}

/// Reads events off an SSE body.
pub struct SseReader {
    lines: std::io::Lines<BufReader<ureq::BodyReader<'static>>>,
}

impl SseReader {
    pub fn new(response: ureq::http::Response<ureq::Body>) -> SseReader {
        SseReader {
            lines: BufReader::new(response.into_body().into_reader()).lines(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` when the stream ended.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let (mut id, mut kind, mut data) = (None, None, None);
        loop {
            let line = self.lines.next()?.ok()?;
            if line.is_empty() {
                if let (Some(id), Some(kind), Some(data)) = (id, kind.clone(), data.clone()) {
                    return Some(SseEvent { id, kind, data });
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).ok();
            }
        }
    }
}
