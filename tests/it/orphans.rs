//! The embedded children (ClickHouse over chDB, nats-server) die with the process that started
//! them: a SIGKILLed service, or one that exits at a second Ctrl-C, must not leave a server behind
//! that holds the data directory and blocks the next start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use marketprism_storage::embedded::{EmbeddedNats, free_port};

use crate::harness::{tools, tools_dir};

/// Whether `pid` runs (a zombie, dead but not reaped, does not count).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn wait_dead(pid: i32, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The pid the embedded ClickHouse wrote into its lock file, once it has one.
fn lock_holder(dir: &Path, secs: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(pid) = std::fs::read_to_string(dir.join(".chserver.lock"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()))
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no lock holder in {dir:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_clickhouse_cmd(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
        .args(["clickhouse", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("MARKETPRISM_TOOLS_DIR", tools_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    line
}

#[test]
fn sigkill_of_the_parent_leaves_no_embedded_clickhouse_holding_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut parent = start_clickhouse_cmd(dir.path());
    let line = first_line(&mut parent);
    assert!(line.contains("listening on http://"), "{line}");
    let server = lock_holder(dir.path(), 30);
    assert!(alive(server));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(
        wait_dead(server, 30),
        "the embedded ClickHouse (pid {server}) outlived its SIGKILLed parent"
    );
    // The next start on the same data directory works at once.
    let mut again = start_clickhouse_cmd(dir.path());
    let line = first_line(&mut again);
    assert!(line.contains("listening on http://"), "{line}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(again.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(again.wait().unwrap().success());
}

#[test]
fn nats_server_dies_with_the_thread_that_started_it() {
    // The kernel's parent-death signal fires when the spawning thread ends, as it does when the
    // whole process is SIGKILLed; a thread of our own shows it without killing the test binary.
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().to_path_buf();
    let pid = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let port = free_port().unwrap();
            let nats = EmbeddedNats::start(&tools(), &store_path, port, None)
                .await
                .unwrap();
            let pid = i32::try_from(nats.pid().unwrap()).unwrap();
            // Not stopped, not dropped: orphaned on purpose.
            std::mem::forget(nats);
            pid
        })
    })
    .join()
    .unwrap();
    assert!(
        wait_dead(pid, 30),
        "nats-server (pid {pid}) outlived the thread that started it"
    );
}
