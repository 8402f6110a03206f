//! Spawning a task's script as a process: environment (DESIGN §2.9), working directory, log
//! redirection, timeout, and killing the whole process tree when it ends.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{Exit, LineSink, RunningTasks, Stream, TaskInput, TaskSpec};

/// Runs scripts as child processes, each in its own process group (and sandbox when asked).
pub struct ProcessExecutor {
    pub running: Arc<RunningTasks>,
    /// Receives output lines; when `None`, stdout and stderr go straight to the log file.
    pub lines: Option<LineSink>,
}

/// SIGKILL a process group, ignoring one that is already gone.
pub fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// The script's environment on top of the inherited one: the step's env, then the contract's
/// variables, which always win so that a stray `env` entry cannot break the contract.
pub fn contract_env(spec: &TaskSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .step
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (input_file, input_name, input_hash) = match &spec.input {
        TaskInput::File { path, name, hash } => {
            (path.display().to_string(), name.clone(), hash.clone())
        }
        _ => (String::new(), String::new(), String::new()),
    };
    let input_dir = match &spec.input {
        TaskInput::Dir { path } => path.display().to_string(),
        _ => String::new(),
    };
    let scratch = spec.scratch_dir.display().to_string();
    env.extend([
        ("INPUT_FILE".into(), input_file),
        ("INPUT_DIR".into(), input_dir),
        ("OUTPUT_DIR".into(), spec.output_dir.display().to_string()),
        ("GRIT_STEP".into(), spec.step.name.clone()),
        ("GRIT_TASK".into(), spec.task_id.to_string()),
        ("GRIT_RUN".into(), spec.run_id.to_string()),
        ("GRIT_INPUT_NAME".into(), input_name),
        ("GRIT_INPUT_HASH".into(), input_hash),
        ("TMPDIR".into(), scratch.clone()),
        ("HOME".into(), scratch),
    ]);
    env
}

impl ProcessExecutor {
    pub async fn execute(&self, spec: &TaskSpec) -> Exit {
        let mut log = match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
        {
            Ok(f) => f,
            Err(e) => {
                return Exit::SpawnFailed(format!(
                    "cannot open log {}: {e}",
                    spec.log_path.display()
                ));
            }
        };
        let Some((program, args)) = spec.step.shell.split_first() else {
            return Exit::SpawnFailed("the step's shell is empty".into());
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .arg(&spec.step.script)
            .current_dir(&spec.workdir)
            .envs(contract_env(spec))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if self.lines.is_some() {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            let (out, err) = match (log.try_clone(), log.try_clone()) {
                (Ok(out), Ok(err)) => (out, err),
                (Err(e), _) | (_, Err(e)) => {
                    return Exit::SpawnFailed(format!("cannot share the log file: {e}"));
                }
            };
            command.stdout(out).stderr(err);
        }
        // Its own process group, so that a timeout or a cancel kills the whole tree.
        command.process_group(0);
        if spec.sandboxed {
            // SANDBOX HOOK: the sandbox configures the command here (namespaces, landlock, caps).
        }
        // SAFETY: the closure only calls prctl(2) and getppid(2), which are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // Die with grit: a killed grit must not leave the script running.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    libc::_exit(137);
                }
                Ok(())
            });
        }

        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Exit::SpawnFailed(format!("{program}: {e}")),
        };
        let Some(pid) = child.id().map(|p| p as i32) else {
            return Exit::SpawnFailed("the child exited before it could be tracked".into());
        };
        self.running.insert(spec.task_id, pid);

        let readers = match &self.lines {
            Some(sink) => {
                let shared = match log.try_clone() {
                    Ok(copy) => Arc::new(std::sync::Mutex::new(copy)),
                    Err(e) => {
                        kill_group(pid);
                        return Exit::SpawnFailed(format!("cannot share the log file: {e}"));
                    }
                };
                let out = child.stdout.take().map(|s| {
                    tokio::spawn(pump(
                        s,
                        Stream::Stdout,
                        shared.clone(),
                        sink.clone(),
                        spec.clone(),
                    ))
                });
                let err = child.stderr.take().map(|s| {
                    tokio::spawn(pump(s, Stream::Stderr, shared, sink.clone(), spec.clone()))
                });
                vec![out, err]
            }
            None => Vec::new(),
        };

        let exit = match spec.step.timeout {
            Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(status) => status_to_exit(status),
                Err(_) => {
                    kill_group(pid);
                    let _ = child.wait().await;
                    Exit::TimedOut(limit)
                }
            },
            None => status_to_exit(child.wait().await),
        };
        // Anything the script left in the background dies with it (DESIGN §2.5: nothing late).
        kill_group(pid);
        self.running.remove(spec.task_id);
        for reader in readers.into_iter().flatten() {
            // Readers end when the last writer of the pipe is gone; a process that escaped the
            // group could hold it open, so do not wait forever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), reader).await;
        }
        if let Exit::TimedOut(limit) = &exit {
            let _ = writeln!(
                log,
                "grit: task timed out after {}",
                humantime::format_duration(*limit)
            );
        }
        exit
    }
}

fn status_to_exit(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::SpawnFailed("unknown exit status".into()),
        },
        Err(e) => Exit::SpawnFailed(format!("waiting for the script failed: {e}")),
    }
}

/// Copy one output stream into the log, line by line, and hand each line to the sink.
async fn pump<R: AsyncRead + Unpin>(
    stream: R,
    which: Stream,
    log: Arc<std::sync::Mutex<File>>,
    sink: LineSink,
    spec: TaskSpec,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Ok(mut file) = log.lock() {
                    let _ = file.write_all(&line);
                }
                let text = String::from_utf8_lossy(&line);
                sink(&spec, which, text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}
