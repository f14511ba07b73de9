//! Shared fixture for the integration tests: starts a real `strata` process on
//! a free loopback port with its own temporary data directory, and runs
//! external clients (kcat, Python scripts) with a time limit.
//!
//! Environment knobs:
//! - `STRATA_BIN`: path of the broker binary (default: `<workspace>/target/release/strata`,
//!   then `<workspace>/target/debug/strata`).
//! - `STRATA_PYTHON`: Python interpreter to use (default `python3`).
//! - `STRATA_TEST_KEEP=1`: keep a failed test's temporary directory (data + broker log).
//!
//! Every wait here is bounded both in time and in number of polls.

#![allow(dead_code)]

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// How long a broker may take until it serves (storage opened, port accepting); generous, as
/// opening storage waits on fsyncs, slow on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval for every wait in this module.
pub const POLL: Duration = Duration::from_millis(50);
/// Ports tried for a broker's first start (see `Broker::spawn`).
const PORT_ATTEMPTS: u32 = 5;
/// Default time limit for one Python script run.
pub const PYTHON_TIMEOUT: Duration = Duration::from_secs(150);
/// How much of the broker log `logs()` returns.
const LOG_TAIL_BYTES: u64 = 24 * 1024;

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Locates the broker binary: `STRATA_BIN`, else `target/release/strata`, else
/// `target/debug/strata` (also under `CARGO_TARGET_DIR` when that is set).
pub fn broker_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "STRATA_BIN={} does not name an existing file",
            p.display()
        );
        return p;
    }
    let mut target_dirs = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        target_dirs.push(if t.is_absolute() {
            t
        } else {
            workspace_root().join(t)
        });
    }
    target_dirs.push(workspace_root().join("target"));
    let mut looked = Vec::new();
    for dir in &target_dirs {
        let release = dir.join("release").join("strata");
        let debug = dir.join("debug").join("strata");
        if release.is_file() {
            let mtime = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
            if debug.is_file() && mtime(&debug) > mtime(&release) {
                eprintln!(
                    "[strata-tests] WARNING: using {} although {} is newer; \
                     rebuild release or set STRATA_BIN",
                    release.display(),
                    debug.display()
                );
            }
            return release;
        }
        if debug.is_file() {
            return debug;
        }
        looked.push(release.display().to_string());
        looked.push(debug.display().to_string());
    }
    panic!(
        "strata broker binary not found (looked at: {}). Build it with \
         `cargo build --release -p strata-cli` or point STRATA_BIN at it.",
        looked.join(", ")
    );
}

/// Picks a currently free loopback port: binds port 0, reads the port, drops the socket.
/// A complete request frame (size prefix included) for the raw-frame tests: header v1/v2 as the
/// API's version needs, then `body` at `version`.
pub fn request_frame<T: kafka_protocol::protocol::Encodable>(
    key: i16,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    body: &T,
) -> Vec<u8> {
    use bytes::BufMut;
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::{encode_request_header_into_buffer, StrBytes};
    let header = RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let mut buf = bytes::BytesMut::new();
    buf.put_i32(0);
    encode_request_header_into_buffer(&mut buf, &header).expect("encode request header");
    body.encode(&mut buf, version).expect("encode request body");
    let size = i32::try_from(buf.len() - 4).expect("test frames fit in i32");
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A topic name unique within this test run.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Returns the last `max` bytes of a file (lossy UTF-8), starting at a line boundary.
fn file_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no file at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        match text.find('\n') {
            Some(i) => format!("[... {start} earlier bytes cut ...]\n{}", &text[i + 1..]),
            None => text,
        }
    } else {
        text
    }
}

pub fn send_signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits in pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is that of
    // our own child, which has not been reaped yet, so it cannot be reused.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Waits for `child` to exit, polling every [`POLL`], for at most `limit`.
fn wait_with_limit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    let max_polls = limit.as_millis() / POLL.as_millis() + 2;
    for _ in 0..max_polls {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL);
    }
    child.try_wait().ok().flatten()
}

/// SIGKILLs `child` by pid and reaps it.
fn kill9_child(child: &mut Child) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    send_signal(child.id(), libc::SIGKILL);
    // SIGKILL cannot be caught; the bounded wait is only a guard against surprises.
    wait_with_limit(child, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("pid {} did not die within 30 s of SIGKILL", child.id()))
}

/// A running (or stopped) `strata serve` process with its own port and data directory.
pub struct Broker {
    bin: PathBuf,
    node_id: i32,
    port: u16,
    set_args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
    /// Environment variables set for the broker process (test hooks), from the next start on.
    env: Vec<(String, String)>,
    starts: u32,
    /// Set once `logs()` was called, so Drop does not print the tail twice.
    logs_shown: Cell<bool>,
}

impl Broker {
    /// Starts a broker (node id 1) on a free port with a fresh data directory.
    /// `extra_set_args` are `key=value` strings, each passed as `--set key=value`.
    /// Returns once the broker serves: it logged so and its port accepts (at most [`START_TIMEOUT`]).
    pub fn start(extra_set_args: &[&str]) -> Broker {
        Broker::start_prepared(extra_set_args, |_| {})
    }

    /// [`Broker::start`] with `env` set in the broker's environment (a test hook such as
    /// `STRATA_TEST_FAIL_SYNCS_OF_TOPIC`), until [`Broker::clear_env`].
    #[allow(dead_code)] // each test file compiles this module on its own
    pub fn start_with_env(extra_set_args: &[&str], env: &[(&str, &str)]) -> Broker {
        Broker::start_prepared_env(extra_set_args, env, |_| {})
    }

    /// Later starts run without the environment given to [`Broker::start_with_env`].
    #[allow(dead_code)]
    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// Waits up to `limit` for the broker to exit on its own: its exit status, or None if it
    /// still runs.
    #[allow(dead_code)]
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_with_limit(self.child.as_mut()?, limit)
    }

    /// [`Broker::start`], with `prepare(data_dir)` run on the empty data directory before the
    /// broker starts (e.g. to mount a size-limited filesystem there).
    pub fn start_prepared(extra_set_args: &[&str], prepare: impl FnOnce(&Path)) -> Broker {
        Broker::start_prepared_env(extra_set_args, &[], prepare)
    }

    fn start_prepared_env(
        extra_set_args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("strata-test-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        prepare(&dir.path().join("data"));
        let mut b = Broker {
            bin: broker_binary(),
            node_id: 1,
            port: free_port(),
            set_args: extra_set_args.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts: 0,
            logs_shown: Cell::new(false),
        };
        b.spawn();
        b
    }

    /// A node of a cluster, node id `node_id`, launched without waiting until it serves (its
    /// start waits for a majority of the controller voters, which may not run yet): call
    /// [`Broker::wait_until_serving`] once the others are launched too.
    pub fn launch(node_id: i32, set_args: &[String]) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("strata-test-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        let mut b = Broker {
            bin: broker_binary(),
            node_id,
            port: free_port(),
            set_args: set_args.to_vec(),
            dir,
            child: None,
            env: Vec::new(),
            starts: 0,
            logs_shown: Cell::new(false),
        };
        b.launch_once();
        b
    }

    /// Waits until a [`Broker::launch`]ed node serves; panics if it does not.
    pub fn wait_until_serving(&mut self) {
        assert!(
            self.wait_until_accepting(),
            "node {} could not bind its port {}{}",
            self.node_id,
            self.port,
            self.logs()
        );
    }

    /// Starts a stopped node again on the same ports and data directory, without waiting.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "node {} is running", self.node_id);
        self.launch_once();
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// `127.0.0.1:PORT`, for clients' `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory owned by this fixture (data dir + log + scratch files).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// File that receives the broker's stderr and stdout (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True if the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// The tail of the broker log, framed for use in assertion messages
    /// (call it lazily, only on failure: a failing test whose message did not
    /// include it gets the tail printed when the fixture is dropped).
    pub fn logs(&self) -> String {
        self.logs_shown.set(true);
        format!(
            "\n---- strata broker log tail ({}) ----\n{}\n---- end of broker log ----",
            self.log_path().display(),
            file_tail(&self.log_path(), LOG_TAIL_BYTES)
        )
    }

    fn spawn(&mut self) {
        // A first start's port came from `free_port`, which let it go again: until the broker
        // binds it, an outgoing connection (another test's client storm, kcat) can take it as
        // its local port, and the bind fails. Then try another port, a bounded number of times;
        // a restart keeps its port (clients were told it).
        let first = self.starts == 0;
        for _ in 0..PORT_ATTEMPTS {
            if self.spawn_once() {
                return;
            }
            assert!(
                first,
                "broker could not bind its port {} again (start #{}){}",
                self.port,
                self.starts,
                self.logs()
            );
            eprintln!(
                "[strata-tests] port {} was taken before the broker bound it; trying another",
                self.port
            );
            self.port = free_port();
        }
        panic!(
            "no free port bound in {PORT_ATTEMPTS} attempts{}",
            self.logs()
        );
    }

    /// One start; false if the broker exited because it could not bind its port.
    fn spawn_once(&mut self) -> bool {
        self.launch_once();
        self.wait_until_accepting()
    }

    /// Starts the process, without waiting for it to serve.
    fn launch_once(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--node-id")
            .arg(self.node_id.to_string())
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--advertise")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(self.data_dir());
        for s in &self.set_args {
            cmd.arg("--set").arg(s);
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open broker log");
        let _ = writeln!(
            log,
            "==== strata-tests: start #{} of {:?} ====",
            self.starts, cmd
        );
        let log_out = log.try_clone().expect("clone log handle");
        // Plain text log (tracing-subscriber honours NO_COLOR).
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // Start-up waits for the "strata is serving" line (info, target `strata_broker::serve`,
        // which the filter's `strata` matches as a prefix).
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", format!("{filter},strata=info"));
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_out))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start broker {}: {e}", self.bin.display()));
        eprintln!(
            "[strata-tests] started {} (pid {}) on {} data {}",
            self.bin.display(),
            child.id(),
            self.bootstrap(),
            self.data_dir().display()
        );
        self.child = Some(child);
    }

    /// The log of the latest start only.
    fn this_start_log(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let marker = format!("==== strata-tests: start #{} ", self.starts);
        log.rfind(&marker)
            .map(|i| log[i..].to_string())
            .unwrap_or_default()
    }

    /// Returns once the broker serves (logged, and its port accepts); false if it exited because its port was
    /// taken; panics on any other failure to start.
    fn wait_until_accepting(&mut self) -> bool {
        let addr: SocketAddr = self.bootstrap().parse().expect("socket address");
        let started = Instant::now();
        let max_polls = START_TIMEOUT.as_millis() / POLL.as_millis() + 1;
        for _ in 0..max_polls {
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                if self.this_start_log().contains("cannot listen on") {
                    return false;
                }
                panic!(
                    "broker exited during startup with {status} (start #{}){}",
                    self.starts,
                    self.logs()
                );
            }
            // The broker binds its port before it opens storage, which can take seconds under
            // load (fsyncs): until it logs that it serves, connections sit in the backlog and a
            // test's request would count that time against its read timeout. A connection to
            // itself (the kernel picked the very port as the local one while nothing listened
            // there) is not the broker either.
            if self.this_start_log().contains("strata is serving") {
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    if s.local_addr().ok() != s.peer_addr().ok() {
                        return true;
                    }
                }
            }
            if started.elapsed() >= START_TIMEOUT {
                break;
            }
            thread::sleep(POLL);
        }
        let logs = self.logs();
        if let Some(mut c) = self.child.take() {
            kill9_child(&mut c);
        }
        panic!(
            "broker did not serve on {} within {:?} (start #{}){logs}",
            self.bootstrap(),
            START_TIMEOUT,
            self.starts
        );
    }

    /// SIGKILLs the broker (no chance to flush or clean up) and reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("kill9: broker is not running{}", self.logs()));
        let status = kill9_child(&mut child);
        eprintln!("[strata-tests] broker killed with SIGKILL: {status}");
        status
    }

    /// Graceful stop: SIGTERM, then wait up to [`STOP_TIMEOUT`] for the exit.
    /// Panics (after SIGKILLing it) if the broker does not exit in time.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("stop: broker is not running{}", self.logs()));
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "stop: broker had already exited with {status}{}",
                self.logs()
            );
        }
        send_signal(child.id(), libc::SIGTERM);
        match wait_with_limit(&mut child, STOP_TIMEOUT) {
            Some(status) => {
                eprintln!("[strata-tests] broker stopped after SIGTERM: {status}");
                status
            }
            None => {
                kill9_child(&mut child);
                panic!(
                    "broker did not exit within {:?} of SIGTERM (killed it){}",
                    STOP_TIMEOUT,
                    self.logs()
                );
            }
        }
    }

    /// Starts the broker again on the same port and data directory. If it is
    /// still running it is first stopped gracefully (use `kill9()` before this
    /// to simulate a crash).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        } else if let Some(mut c) = self.child.take() {
            // Exited on its own: reap it and note that in the log.
            let status = c.wait().ok();
            eprintln!("[strata-tests] broker had exited on its own: {status:?}");
        }
        self.spawn();
    }

    /// Runs `python3 tests/python/<script> args...` with `BOOTSTRAP` set, for at
    /// most [`PYTHON_TIMEOUT`].
    pub fn python<S: AsRef<OsStr>>(&self, script: &str, args: &[S]) -> Output {
        self.python_with_timeout(script, args, PYTHON_TIMEOUT)
    }

    pub fn python_with_timeout<S: AsRef<OsStr>>(
        &self,
        script: &str,
        args: &[S],
        timeout: Duration,
    ) -> Output {
        run(self.python_command(script, args), None, timeout)
    }

    /// Starts a Python script in the background (see [`Background`]).
    pub fn spawn_python<S: AsRef<OsStr>>(&self, script: &str, args: &[S]) -> Background {
        Background::spawn(self.python_command(script, args), None)
    }

    fn python_command<S: AsRef<OsStr>>(&self, script: &str, args: &[S]) -> Command {
        let path = python_dir().join(script);
        assert!(path.is_file(), "no such script: {}", path.display());
        let mut cmd = Command::new(python_bin());
        cmd.arg(path)
            .args(args)
            .env("BOOTSTRAP", self.bootstrap())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9_child(&mut c);
        }
        if thread::panicking() {
            if self.logs_shown.get() {
                eprintln!("[strata-tests] broker log: {}", self.log_path().display());
            } else {
                eprintln!("{}", self.logs());
            }
            if std::env::var_os("STRATA_TEST_KEEP").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!("[strata-tests] kept temp dir {}", self.dir.path().display());
            }
        }
    }
}

/// `tests/python` in the workspace.
pub fn python_dir() -> PathBuf {
    workspace_root().join("tests").join("python")
}

/// The Python interpreter: `STRATA_PYTHON` or `python3`.
pub fn python_bin() -> String {
    std::env::var("STRATA_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Fails the test with a clear message unless `tool` can be run
/// (`tool version_arg` must start; its exit code is not checked).
pub fn require_tool(tool: &str, version_arg: &str, install_hint: &str) {
    match Command::new(tool)
        .arg(version_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(mut c) => {
            if wait_with_limit(&mut c, Duration::from_secs(10)).is_none() {
                kill9_child(&mut c);
            }
        }
        Err(e) => panic!("required tool `{tool}` cannot be run ({e}); install it: {install_hint}"),
    }
}

/// Fails the test with a clear message unless every module imports in [`python_bin`].
pub fn require_python_modules(modules: &[&str], install_hint: &str) {
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut cmd = Command::new(python_bin());
    cmd.arg("-c").arg(&code);
    let out = run(cmd, None, Duration::from_secs(30));
    assert!(
        out.success(),
        "Python modules {modules:?} are not importable with `{}`; install them: {install_hint}\n{}",
        python_bin(),
        out.describe()
    );
}

/// Result of an external command run with a time limit.
#[derive(Debug)]
pub struct Output {
    pub what: String,
    /// `None` only if the process could not be reaped (should not happen).
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "\n---- `{}`: status {:?}{} after {:.1?} ----\n-- stdout --\n{}\n-- stderr --\n{}\n---- end ----",
            self.what,
            self.status,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            tail_str(&self.stdout, 16 * 1024),
            tail_str(&self.stderr, 16 * 1024),
        )
    }

    /// Panics with the command's output and `context()` (e.g. `|| broker.logs()`,
    /// evaluated only on failure) unless the command succeeded.
    #[track_caller]
    pub fn assert_success(&self, context: impl FnOnce() -> String) -> &Self {
        if !self.success() {
            panic!("command failed: {}{}", self.describe(), context());
        }
        self
    }
}

fn tail_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// An external process running in the background with its stdout/stderr
/// collected by reader threads. Killed (SIGKILL) on drop if still running.
pub struct Background {
    what: String,
    child: Option<Child>,
    started: Instant,
    stdout: Option<mpsc::Receiver<Vec<u8>>>,
    stderr: Option<mpsc::Receiver<Vec<u8>>>,
}

fn reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

impl Background {
    /// Spawns `cmd` with piped stdout/stderr (and `stdin` fed then closed, if given).
    pub fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> Background {
        let what = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {:?} ({e}); is it installed? (command: {what})",
                cmd.get_program()
            )
        });
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("piped stdin");
            thread::spawn(move || {
                let _ = w.write_all(&input);
                // Dropping `w` closes the pipe: end of input.
            });
        }
        let stdout = reader(child.stdout.take().expect("piped stdout"));
        let stderr = reader(child.stderr.take().expect("piped stderr"));
        Background {
            what,
            child: Some(child),
            started: Instant::now(),
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Waits up to `timeout` (counted from spawn) for the process to exit;
    /// SIGKILLs it if it is still running then. Returns its status and output.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("child present");
        let remaining = timeout.saturating_sub(self.started.elapsed());
        let mut status = wait_with_limit(&mut child, remaining);
        let timed_out = status.is_none();
        if timed_out {
            status = Some(kill9_child(&mut child));
        }
        // The pipes close when the process exits; the bound only guards against
        // a grandchild that inherited them.
        let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
            rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Output {
            what: self.what.clone(),
            status,
            timed_out,
            elapsed: self.started.elapsed(),
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9_child(&mut c);
        }
    }
}

/// Runs `cmd` to completion with a time limit, SIGKILLing it if it runs over.
pub fn run(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    Background::spawn(cmd, stdin.map(|s| s.to_vec())).wait(timeout)
}

/// Polls `cond` every [`POLL`] until it returns true or `limit` passes; returns
/// whether it became true.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let max_polls = limit.as_millis() / POLL.as_millis() + 2;
    for _ in 0..max_polls {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL);
    }
    cond()
}

/// Everything kcat reads from the beginning of `topic` (all partitions, or just `partition`),
/// one line per record in kcat's `-f` `format`; fails the test (with the broker's log) if kcat
/// fails or takes longer than `timeout`.
#[allow(dead_code)] // each test file compiles this module on its own
pub fn kcat_read_all(
    broker: &Broker,
    topic: &str,
    partition: Option<i32>,
    format: &str,
    timeout: Duration,
) -> String {
    let mut cmd = Command::new("kcat");
    cmd.args(["-C", "-b", &broker.bootstrap(), "-t", topic]);
    if let Some(p) = partition {
        cmd.args(["-p", &p.to_string()]);
    }
    cmd.args(["-o", "beginning", "-e", "-q", "-f", format]);
    let out = run(cmd, None, timeout);
    out.assert_success(|| broker.logs());
    out.stdout
}

/// `kcat -P -K:` of `input` (one `key:value` line per record) compressed with `codec`, each
/// record with the `headers` (`k=v`), `acks=all` and idempotence off, plus `extra` flags. Fails
/// the test if kcat fails or reports a delivery error.
#[allow(dead_code)] // each test file compiles this module on its own
pub fn kcat_produce_keyed(
    broker: &Broker,
    topic: &str,
    codec: &str,
    headers: &[&str],
    extra: &[&str],
    input: &str,
) -> Output {
    let mut cmd = Command::new("kcat");
    cmd.args(["-P", "-b", &broker.bootstrap(), "-t", topic, "-K:"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.args([
        "-z",
        codec,
        "-X",
        "acks=all",
        "-X",
        "enable.idempotence=false",
        "-X",
        "message.timeout.ms=30000",
    ]);
    cmd.args(extra);
    let out = run(cmd, Some(input.as_bytes()), Duration::from_secs(60));
    out.assert_success(|| broker.logs());
    let errors = ["Delivery failed", "ERROR", "failed"];
    assert!(
        !errors.iter().any(|e| out.stderr.contains(e)),
        "kcat reported errors while producing:{}{}",
        out.describe(),
        broker.logs()
    );
    out
}

/// A cluster's nodes: `voters` that are broker and controller, then `brokers` broker-only ones
/// (node ids from 1), with `extra` settings each, all launched before any is waited for (a voter
/// serves only once a majority runs).
pub fn launch_cluster(voters: usize, brokers: usize, extra: &[&str]) -> Vec<Broker> {
    let controller_ports: Vec<u16> = (0..voters + brokers).map(|_| free_port()).collect();
    let voter_list = (0..voters)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, controller_ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Broker> = (0..voters + brokers)
        .map(|i| {
            let mut set = vec![
                format!("controller.quorum.voters={voter_list}"),
                format!("controller.listener=127.0.0.1:{}", controller_ports[i]),
                "group.initial.rebalance.delay.ms=0".to_string(),
                "offsets.topic.num.partitions=6".to_string(),
            ];
            if i >= voters {
                set.push("process.roles=broker".to_string());
            }
            set.extend(extra.iter().map(|s| s.to_string()));
            Broker::launch(i as i32 + 1, &set)
        })
        .collect();
    for node in &mut nodes {
        node.wait_until_serving();
    }
    nodes
}

/// A Kafka string of `s`.
pub fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

/// A connection to `b` with our client's defaults.
pub async fn connect(b: &Broker) -> strata_client::Connection {
    strata_client::Connection::connect(&b.bootstrap(), strata_client::ConnectionConfig::default())
        .await
        .expect("connect")
}

/// Creates `topic` with one partition on `replicas` (the first leads) and `configs`, through
/// `c`. Every broker registers on its own after it starts serving, so one named here may not be
/// in that broker's metadata yet: INVALID_REPLICA_ASSIGNMENT (39) and
/// INVALID_REPLICATION_FACTOR (38) are tried again for up to 30 s.
pub async fn create_assigned_topic(
    c: &strata_client::Connection,
    topic: &str,
    replicas: &[i32],
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, TopicName};
    let t = CreatableTopic::default()
        .with_name(TopicName(str_bytes(topic)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(replicas.iter().map(|b| BrokerId(*b)).collect())])
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(20_000);
    let start = Instant::now();
    loop {
        let (response, _) = c.send(&request).await.expect("CreateTopics");
        let code = response.topics[0].error_code;
        if code == 0 {
            return;
        }
        assert!(
            matches!(code, 38 | 39) && start.elapsed() < Duration::from_secs(30),
            "CreateTopics: {code} {:?}",
            response.topics[0].error_message
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One Fetch v12 as a consumer (a follower answers too, KIP-392) of `topic`/`partition` from
/// `offset`, up to 1 MiB: that partition's part of the answer.
pub async fn consumer_fetch(
    c: &strata_client::Connection,
    topic: &str,
    partition: i32,
    offset: i64,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(str_bytes(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response = c.send_at(&request, 12).await.expect("Fetch");
    response.responses[0].partitions[0].clone()
}
