//! Spawning a task's script as a process: environment (DESIGN §2.9), working directory, log
//! redirection, timeout, cancellation, and killing the whole process tree when it ends.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{ExecFuture, Executor, Exit, LineSink, Stream, TaskControl, TaskInput, TaskSpec};
use crate::capture::{HelperCheck, TaskIdentity};
use crate::sandbox::{Sandbox, SandboxMode};

/// Runs scripts as child processes of grit, each in its own process group, or in its own
/// sandbox for steps that ask for one. It owns the sandbox's zygote: started at the first
/// sandboxed task, ended at the end of each run and when the executor is dropped.
#[derive(Default)]
pub struct ProcessExecutor {
    sandbox: Sandbox,
}

impl ProcessExecutor {
    /// An executor that has started nothing yet.
    pub fn new() -> ProcessExecutor {
        ProcessExecutor::default()
    }

    /// The pids of this executor's running zygote and its twin, if any.
    #[cfg(test)]
    pub(crate) fn running_zygote(&self) -> Vec<i32> {
        self.sandbox.running_zygote()
    }
}

impl Executor for ProcessExecutor {
    fn execute<'a>(&'a self, spec: &'a TaskSpec, control: &'a TaskControl) -> ExecFuture<'a> {
        Box::pin(self.run(spec, control))
    }

    fn helpers(&self) -> Option<HelperCheck> {
        let zygote = self.sandbox.zygote_pids();
        Some(Arc::new(move |pid| {
            i32::try_from(pid).is_ok_and(|pid| zygote.contains(pid))
        }))
    }

    fn run_ended(&self) {
        self.sandbox.shutdown();
    }

    fn prepares_ahead(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "process"
    }
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
        .chain(spec.step.param_env())
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

/// A started script: a plain child of tokio, or a sandboxed task's init.
enum Started {
    Plain(tokio::process::Child),
    Sandboxed(crate::sandbox::Sandboxed),
}

impl Started {
    fn id(&self) -> Option<u32> {
        match self {
            Started::Plain(child) => child.id(),
            Started::Sandboxed(task) => Some(task.id()),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Started::Plain(child) => child.wait().await,
            Started::Sandboxed(task) => task.wait().await,
        }
    }

    /// Kills the whole task: the process group, or the sandbox's pid namespace.
    fn kill(&self, pid: i32) {
        match self {
            Started::Plain(_) => kill_group(pid),
            Started::Sandboxed(task) => task.kill(),
        }
    }
}

/// The script's stdout and stderr when they are read line by line (`-v`).
type Outputs = (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncRead + Unpin + Send>,
);

/// The inherited environment with `overrides` on top, as the script sees it: like `Command::envs`,
/// each name appears once and a later override wins (the contract's variables come last in
/// [`contract_env`]).
fn full_env(overrides: Vec<(String, String)>) -> Vec<(OsString, OsString)> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.extend(overrides.into_iter().map(|(k, v)| (k.into(), v.into())));
    env.into_iter().collect()
}

/// A pipe whose read end tokio polls and whose write end (blocking, as scripts expect) goes to
/// the script.
fn output_pipe() -> std::io::Result<(tokio::net::unix::pipe::Receiver, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((
        tokio::net::unix::pipe::Receiver::from_owned_fd(read)?,
        write,
    ))
}

impl ProcessExecutor {
    /// Starts the script without a sandbox: std can use `posix_spawn` here.
    fn start_plain(
        &self,
        spec: &TaskSpec,
        lines: bool,
        log: &File,
        program: &str,
        args: &[String],
    ) -> Result<(Started, Option<Outputs>), Exit> {
        let mut command = Command::new(program);
        command
            .args(args)
            .arg(&spec.step.script)
            .current_dir(&spec.workdir)
            .envs(contract_env(spec))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if lines {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            let (out, err) = match (log.try_clone(), log.try_clone()) {
                (Ok(out), Ok(err)) => (out, err),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(Exit::SpawnFailed(format!("cannot share the log file: {e}")));
                }
            };
            command.stdout(out).stderr(err);
        }
        // Its own process group, so that a timeout or a cancel kills the whole tree. Nothing
        // else is set up in the child, which lets std use posix_spawn (vfork) instead of fork:
        // measured ≈1 ms less per task. The price: after a `kill -9` of grit, an unsandboxed
        // script may outlive it (the sandbox's pid namespace closes that gap), and its late
        // writes land in staging directories no later run uses.
        command.process_group(0);
        // The script may write to OUTPUT_DIR before `spawn` returns: the capture holds its first
        // requests until the process group is admitted below.
        if let Some(admission) = &spec.admission {
            admission.expect();
        }
        let spawned = command.spawn();
        if let Some(admission) = &spec.admission {
            let group = spawned.as_ref().ok().and_then(|c| c.id());
            admission.admit(group.map(|pid| TaskIdentity::ProcessGroup(pid as i32)));
        }
        let mut child = spawned.map_err(|e| Exit::SpawnFailed(format!("{program}: {e}")))?;
        let outputs = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), Some(err)) => Some((Box::new(out) as _, Box::new(err) as _)),
            _ => None,
        };
        Ok((Started::Plain(child), outputs))
    }

    /// Starts the script in the sandbox (namespaces, landlock, caps; see `crate::sandbox`).
    fn start_sandboxed(
        &self,
        spec: &TaskSpec,
        lines: bool,
        log: &mut File,
        program: &str,
        args: &[String],
    ) -> Result<(Started, Option<Outputs>), Exit> {
        let mut env = full_env(contract_env(spec));
        let rootfs = spec.step.image.as_ref().map(|i| i.rootfs(&spec.store_dir));
        if rootfs.is_some() && !spec.step.env.contains_key("PATH") {
            // The host's PATH means nothing in the image: its conventional one.
            for (k, v) in &mut env {
                if k == "PATH" {
                    *v = crate::image::IMAGE_PATH.into();
                }
            }
            if !env.iter().any(|(k, _)| k == "PATH") {
                env.push(("PATH".into(), crate::image::IMAGE_PATH.into()));
            }
        }
        let argv: Vec<OsString> = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .chain(std::iter::once(spec.step.script.as_str()))
            .map(OsString::from)
            .collect();
        let spawn_failed = |e: std::io::Error| Exit::SpawnFailed(format!("{program}: {e}"));
        let devnull = File::open("/dev/null").map_err(spawn_failed)?;
        let (readers, writers) = if lines {
            let (out_read, out_write) = output_pipe().map_err(spawn_failed)?;
            let (err_read, err_write) = output_pipe().map_err(spawn_failed)?;
            (
                Some((Box::new(out_read) as _, Box::new(err_read) as _)),
                Some((out_write, err_write)),
            )
        } else {
            (None, None)
        };
        let (stdout, stderr) = match &writers {
            Some((out, err)) => (out.as_fd(), err.as_fd()),
            None => (log.as_fd(), log.as_fd()),
        };
        let (input_file, input_dir) = match &spec.input {
            TaskInput::File { path, .. } => (Some(path.as_path()), None),
            TaskInput::Dir { path } => (None, Some(path.as_path())),
            TaskInput::None => (None, None),
        };
        let request = crate::sandbox::SandboxRequest {
            cwd: &spec.workdir,
            input_file,
            input_dir,
            output_dir: &spec.output_dir,
            scratch_dir: &spec.scratch_dir,
            store_dir: &spec.store_dir,
            policy: &spec.step.policy,
            image: rootfs.as_deref(),
        };
        let mut admit = |init: i32| {
            if let Some(admission) = &spec.admission {
                let who = TaskIdentity::pid_namespace_of(init);
                if let Err(e) = &who {
                    // Then nothing of the task can use OUTPUT_DIR, and the task fails saying so.
                    tracing::warn!("cannot read the pid namespace of task init {init}: {e}");
                }
                admission.admit(who.ok());
            }
        };
        let started = self.sandbox.prepare(
            &request,
            &crate::sandbox::Program {
                name: OsStr::new(program),
                args: &argv,
                env: &env,
                stdio: [devnull.as_fd(), stdout, stderr],
            },
            &mut admit,
        );
        // The script holds its own copies of the pipes' write ends; ours must close for the
        // readers to see the end of the output.
        drop(writers);
        match started {
            Ok(task) => Ok((Started::Sandboxed(task), readers)),
            Err(e) => {
                let _ = writeln!(log, "grit: {e}");
                Err(Exit::SpawnFailed(e.to_string()))
            }
        }
    }

    /// One attempt of `spec`, to its end or until the run is cancelled.
    async fn run(&self, spec: &TaskSpec, control: &TaskControl) -> Exit {
        if control.cancel.reason().is_some() {
            return Exit::Cancelled;
        }
        let mut log = match crate::store::access::open_append_private(&spec.log_path) {
            Ok(f) => f,
            Err(e) => {
                return Exit::SpawnFailed(format!(
                    "cannot open log {}: {e}",
                    spec.log_path.display()
                ));
            }
        };
        // In an image the step's default shell depends on the image (bash or `sh -ec`).
        let shell = match &spec.step.image {
            Some(image) => image.shell(&image.rootfs(&spec.store_dir), &spec.step.shell),
            None => spec.step.shell.clone(),
        };
        let Some((program, args)) = shell.split_first() else {
            return Exit::SpawnFailed("the step's shell is empty".into());
        };
        let sandboxed = spec.sandboxed && spec.step.policy.sandbox != SandboxMode::Off;
        let lines = control.lines.is_some();
        if !sandboxed && spec.step.image.is_some() {
            return Exit::SpawnFailed(
                "the step has an `image`, which needs the sandbox: run without --no-sandbox".into(),
            );
        }
        // A plain script starts with its spawn, so it waits for its turn first; a sandboxed one
        // is set up first and waits for its turn just before its script (below).
        let mut permit = None;
        if !sandboxed {
            match control.script_may_start().await {
                Some(turn) => permit = Some(turn),
                None => return Exit::Cancelled,
            }
        }
        let spawn_started = std::time::Instant::now();
        let started = if sandboxed {
            self.start_sandboxed(spec, lines, &mut log, program, args)
        } else {
            self.start_plain(spec, lines, &log, program, args)
        };
        tracing::trace!(
            target: "grit::timing",
            task = spec.task_id,
            spawn_us = spawn_started.elapsed().as_micros() as u64,
            "spawned"
        );
        let (mut child, outputs) = match started {
            Ok(started) => started,
            Err(exit) => return exit,
        };
        if let Started::Sandboxed(task) = &mut child {
            match control.script_may_start().await {
                Some(turn) => permit = Some(turn),
                // Dropping the task kills its init, which never ran the script.
                None => return Exit::Cancelled,
            }
            task.start();
        }
        // Held until the script's processes are gone, when this attempt returns.
        let _turn = permit;
        let Some(pid) = child.id().map(|p| p as i32) else {
            return Exit::SpawnFailed("the child exited before it could be tracked".into());
        };
        // If this future is dropped (the engine gave up on the run), the whole group goes, not
        // only its leader; a sandboxed task's init takes its namespace with it on drop already.
        // (`then`, not `then_some`: a guard built and thrown away would kill at once.)
        let group_guard = matches!(child, Started::Plain(_)).then(|| KillGroupOnDrop(pid));

        let readers = match (&control.lines, outputs) {
            (Some(sink), Some((out, err))) => {
                let shared = match log.try_clone() {
                    Ok(copy) => Arc::new(std::sync::Mutex::new(copy)),
                    Err(e) => {
                        child.kill(pid);
                        return Exit::SpawnFailed(format!("cannot share the log file: {e}"));
                    }
                };
                vec![
                    tokio::spawn(pump(
                        out,
                        Stream::Stdout,
                        shared.clone(),
                        sink.clone(),
                        spec.clone(),
                    )),
                    tokio::spawn(pump(
                        err,
                        Stream::Stderr,
                        shared,
                        sink.clone(),
                        spec.clone(),
                    )),
                ]
            }
            _ => Vec::new(),
        };

        // The script's end, its timeout, or the run's cancellation, whichever comes first.
        let ended = {
            let waited = async {
                match spec.step.timeout {
                    Some(limit) => tokio::time::timeout(limit, child.wait())
                        .await
                        .map_err(|_| Exit::TimedOut(limit)),
                    None => Ok(child.wait().await),
                }
            };
            tokio::select! {
                biased;
                _ = control.cancel.cancelled() => Err(Exit::Cancelled),
                waited = waited => waited,
            }
        };
        let exit = match ended {
            Ok(status) => status_to_exit(status),
            Err(stopped) => {
                child.kill(pid);
                let _ = child.wait().await;
                stopped
            }
        };
        // Anything the script left in the background dies with it (DESIGN §2.5: nothing late).
        // A sandboxed task's init has already killed its whole namespace.
        // Before the readers are awaited: a background process would hold their pipes open.
        drop(group_guard);
        for reader in readers {
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

/// Kills a plain task's process group when dropped.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        kill_group(self.0);
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
