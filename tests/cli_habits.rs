//! The habits users bring from make, cargo and Unix tools: a closed stdout pipe is not an error,
//! environment errors have their own exit code, the manifest and store are found from a
//! subdirectory, and reader commands take names and globs.

mod common;

use std::process::{Command, Stdio};

use common::{Project, describe};

const TWO: &str = r#"
[[step]]
name = "seed"
once = true
script = '''
echo alpha > $OUTPUT_DIR/word
seq 1 100000 > $OUTPUT_DIR/big.csv
'''

[[step]]
name = "upper"
inputs = ["word"]
script = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/shout'
"#;

fn grit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grit"));
    cmd.env_remove("GRIT_DB").env("NO_COLOR", "1");
    cmd
}

/// Run `cmd` with stdout a pipe whose reading end is already closed, as after `| head -1` has
/// read its line. Returns the exit code and stderr.
fn into_closed_pipe(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = cmd
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run grit");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn writing_into_a_closed_pipe_exits_0_quietly() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let db = p.db();
    let db = db.to_str().unwrap();
    let big = p
        .live()
        .into_iter()
        .find(|(n, _)| n == "big.csv")
        .map(|(_, h)| h)
        .unwrap();
    for args in [
        vec!["status", "--db", db],
        vec!["status", "--json", "--db", db],
        vec!["resources", "--db", db],
        vec!["cat", &big, "--db", db],
        vec!["log", "--step", "upper", "--db", db],
        vec!["graph", "--db", db],
        vec!["completions", "bash"],
    ] {
        let mut cmd = grit();
        cmd.args(&args);
        let (code, stderr) = into_closed_pipe(cmd);
        assert_eq!(code, Some(0), "grit {args:?}: {stderr}");
        assert_eq!(stderr, "", "grit {args:?} is quiet");
    }
}

#[test]
fn environment_errors_exit_5() {
    let p = Project::new(TWO);
    // A store whose directory cannot be created: its parent is a file.
    let file = p.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let output = grit()
        .args(["run", "--no-sandbox", "-m"])
        .arg(p.manifest())
        .arg("--db")
        .arg(file.join("db"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("plain-file/db"),
        "{}",
        describe(&output)
    );

    // A file to ingest that cannot be read.
    let output = p.grit(&["ingest", "--name", "x", "/nonexistent/file.txt"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));

    // A store this user may not read: run as another user when root.
    p.run_ok(&[]);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped the permission case: it needs root to switch to another user");
        return;
    }
    let user = "grit-sbx-test";
    let exists = Command::new("id")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists
        && !Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", user])
            .status()
            .is_ok_and(|s| s.success())
    {
        eprintln!("skipped the permission case: useradd is unavailable");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_grit"))
        .args(["status", "--db"])
        .arg(p.db())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Permission denied"),
        "{}",
        describe(&output)
    );
}
