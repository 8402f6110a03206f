//! A fake journald for the tests: a unix datagram socket bind-mounted over `/run/systemd` in a
//! private mount namespace (`unshare -m`), where the real `grit` binary runs and sends its records
//! by journald's native protocol; the datagrams are parsed back into records. Needs root.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub type Record = HashMap<String, Vec<String>>;

/// Parse one native-protocol datagram: `KEY=value\n`, or `KEY\n<u64 LE length><bytes>\n`.
pub fn parse(datagram: &[u8]) -> Record {
    let mut record: Record = HashMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            let value = String::from_utf8_lossy(&line[eq + 1..]).into_owned();
            record.entry(key).or_default().push(value);
            rest = &rest[(end + 1).min(rest.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len_bytes: [u8; 8] = rest[end + 1..end + 9].try_into().unwrap();
            let len = u64::from_le_bytes(len_bytes) as usize;
            let start = end + 9;
            let value = String::from_utf8_lossy(&rest[start..start + len]).into_owned();
            record.entry(key).or_default().push(value);
            rest = &rest[(start + len + 1).min(rest.len())..];
        }
    }
    record
}

pub fn one<'a>(record: &'a Record, key: &str) -> Option<&'a str> {
    record.get(key).and_then(|v| v.first()).map(String::as_str)
}

pub struct FakeJournal {
    _dir: tempfile::TempDir,
    systemd_dir: PathBuf,
    received: mpsc::Receiver<Vec<u8>>,
}

impl FakeJournal {
    pub fn new() -> FakeJournal {
        let dir = tempfile::tempdir().unwrap();
        let systemd_dir = dir.path().join("systemd");
        std::fs::create_dir_all(systemd_dir.join("journal")).unwrap();
        let socket = UnixDatagram::bind(systemd_dir.join("journal/socket")).unwrap();
        let (send, received) = mpsc::channel();
        // Read while grit writes: the datagram queue is short and a full queue blocks the sender.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = socket.recv(&mut buf) {
                if send.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        FakeJournal {
            _dir: dir,
            systemd_dir,
            received,
        }
    }

    /// Run grit with `args` in a private mount namespace where our socket is
    /// /run/systemd/journal/socket; stderr goes to `stderr_file`.
    pub fn run_grit(&self, args: &[&str], env: &[(&str, String)], stderr_file: &Path) -> Output {
        let stderr = std::fs::File::create(stderr_file).unwrap();
        let mut command = Command::new("unshare");
        command
            .args([
                "-m",
                "sh",
                "-c",
                "mount --bind \"$0\" /run/systemd && exec \"$@\"",
            ])
            .arg(&self.systemd_dir)
            .arg(env!("CARGO_BIN_EXE_grit"))
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .env_remove("GRIT_LOG")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    }

    /// Every record received until the socket has been quiet for a moment.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        while let Ok(datagram) = self.received.recv_timeout(Duration::from_millis(500)) {
            if !datagram.is_empty() {
                out.push(parse(&datagram));
            }
        }
        out
    }
}

/// The first record whose message contains `message_part`.
pub fn find<'a>(records: &'a [Record], message_part: &str) -> &'a Record {
    records
        .iter()
        .find(|r| one(r, "MESSAGE").is_some_and(|m| m.contains(message_part)))
        .unwrap_or_else(|| panic!("no record with {message_part:?} in {records:#?}"))
}
