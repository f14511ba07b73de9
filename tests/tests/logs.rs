//! What the broker's log says to the person who reads it: plain text when it goes to a file or
//! pipe (no ANSI colour codes, even without `NO_COLOR`), and a first start on a fresh data
//! directory says so instead of reporting an unclean shutdown. On a terminal it is coloured
//! unless `NO_COLOR` is set.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    broker_binary, free_port, run, wait_for, Background, Output, START_TIMEOUT, STOP_TIMEOUT,
};

/// Runs `strata serve` on `data_dir` with its log on a pipe and no `NO_COLOR`, waits until it
/// accepts connections, stops it with SIGTERM and returns what it logged.
fn serve_once(data_dir: &Path) -> Output {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(broker_binary());
    cmd.args([
        "serve",
        "--listen",
        &listen,
        "--advertise",
        &listen,
        "--data-dir",
    ])
    .arg(data_dir)
    .env_remove("NO_COLOR")
    .env("RUST_LOG", "info");
    let mut broker = Background::spawn(cmd, None);
    let accepting = wait_for(START_TIMEOUT, || {
        TcpStream::connect_timeout(&listen.parse().unwrap(), Duration::from_millis(200)).is_ok()
            || !broker.is_running()
    });
    assert!(accepting, "broker did not start within {START_TIMEOUT:?}");
    // The port accepts before the broker serves (its signal handler is installed then): wait
    // for an answer to a real request before stopping it.
    let mut list = Command::new(broker_binary());
    list.args(["topic", "list", "-b", &listen]);
    run(list, None, START_TIMEOUT).assert_success(|| "strata topic list".into());
    if let Some(pid) = broker.pid() {
        // SAFETY: kill(2) on the pid of the child this test started and still owns.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let out = broker.wait(START_TIMEOUT + STOP_TIMEOUT);
    assert!(
        out.success(),
        "broker did not stop cleanly{}",
        out.describe()
    );
    out
}

#[test]
fn a_broker_logging_to_a_pipe_writes_plain_text_and_names_a_new_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    // First start: the directory does not exist yet.
    let first = serve_once(&data_dir);
    assert!(
        !first.stderr.contains('\u{1b}'),
        "ANSI escape codes in a piped log{}",
        first.describe()
    );
    assert!(
        first.stderr.contains("new data directory"),
        "a fresh data dir is not named as new{}",
        first.describe()
    );
    assert!(
        !first.stderr.contains("clean_shutdown=false"),
        "a fresh data dir is reported as an unclean shutdown{}",
        first.describe()
    );

    // Second start on the same directory, after a clean stop: the usual report.
    let second = serve_once(&data_dir);
    assert!(!second.stderr.contains('\u{1b}'), "{}", second.describe());
    assert!(
        second.stderr.contains("clean_shutdown=true"),
        "{}",
        second.describe()
    );
    assert!(
        !second.stderr.contains("new data directory"),
        "{}",
        second.describe()
    );
}

#[test]
fn an_empty_data_directory_made_beforehand_is_new_too() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let out = serve_once(&data_dir);
    assert!(
        out.stderr.contains("new data directory"),
        "{}",
        out.describe()
    );
}

/// Runs `strata serve` for a few seconds on a pseudo-terminal (util-linux `script`), with
/// `NO_COLOR` set to `no_color` (or removed), and returns what the terminal showed.
fn serve_on_a_terminal(data_dir: &Path, no_color: Option<&str>) -> Output {
    let serve = format!(
        "timeout -s TERM 4 '{}' serve --listen 127.0.0.1:0 --data-dir '{}'",
        broker_binary().display(),
        data_dir.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &serve, "/dev/null"]);
    match no_color {
        Some(v) => cmd.env("NO_COLOR", v),
        None => cmd.env_remove("NO_COLOR"),
    };
    let out = run(cmd, None, START_TIMEOUT + STOP_TIMEOUT);
    assert!(
        out.stdout.contains("storage loaded"),
        "the broker did not get as far as loading storage{}",
        out.describe()
    );
    out
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    common::require_tool("script", "--version", "apt-get install util-linux");
    let dir = tempfile::tempdir().unwrap();
    let coloured = serve_on_a_terminal(&dir.path().join("a"), None);
    assert!(
        coloured.stdout.contains('\u{1b}'),
        "no colour on a terminal{}",
        coloured.describe()
    );
    let plain = serve_on_a_terminal(&dir.path().join("b"), Some("1"));
    assert!(
        !plain.stdout.contains('\u{1b}'),
        "colour although NO_COLOR is set{}",
        plain.describe()
    );
}
