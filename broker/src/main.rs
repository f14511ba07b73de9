//! The `strata` binary. `strata serve` with no flags is a working single-node broker on
//! 127.0.0.1:9092 with its data in ./strata-data.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use strata_broker::config::BrokerConfig;
use strata_broker::controller::quorum::QuorumSettings;
use strata_broker::node::{Endpoint, Node};
use strata_broker::server;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a Kafka-compatible, replicated log broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker. With no flags: node 1 on 127.0.0.1:9092, data in ./strata-data.
    Serve(ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// Produce records read from stdin, one per line.
    Produce(cli::produce::ProduceArgs),
    /// Print records of a topic.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
    /// Measure produce or consume throughput and latency (like kafka-*-perf-test).
    #[command(subcommand)]
    Perf(cli::perf::PerfCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// This broker's node id (`node.id`).
    #[arg(long, value_name = "N")]
    node_id: Option<u32>,
    /// Address to accept Kafka clients on (`listeners`); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address clients are told to connect to (`advertised.listeners`); defaults to the listener.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Directory for all data (`log.dirs`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A Kafka-style properties file of `key=value` lines.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics (`metrics.listener`); off by default.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// Sets one configuration key, overriding the file; repeat as needed.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Colour only for a person at a terminal: logs written to a file or pipe stay plain text, and
/// `NO_COLOR` (set and not empty, per no-color.org) turns colour off everywhere.
fn log_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(log_colour())
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Topic(command) => cli::run_client(cli::topic::run(command)),
        Command::Produce(args) => cli::run_client(cli::produce::run(args)),
        Command::Consume(args) => cli::run_client(cli::consume::run(args)),
        Command::Perf(command) => cli::run_client(cli::perf::run(command)),
        Command::Group(command) => cli::run_client(cli::group::run(command)),
    }
}

/// Builds the configuration: defaults, then the file, then `--set`, then the explicit flags.
fn build_config(args: &ServeArgs) -> Result<BrokerConfig, String> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
        config
            .apply_properties(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set '{kv}': expected KEY=VALUE"))?;
        config.set(k.trim(), v).map_err(|e| format!("--set: {e}"))?;
    }
    let flags = [
        ("node.id", args.node_id.map(|n| n.to_string())),
        ("listeners", args.listen.clone()),
        ("advertised.listeners", args.advertise.clone()),
        ("metrics.listener", args.metrics_listen.clone()),
        (
            "log.dirs",
            args.data_dir.as_ref().map(|d| d.display().to_string()),
        ),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            config.set(key, &v).map_err(|e| e.to_string())?;
        }
    }
    // The controller quorum's keys are checked like every other; `serve` does not run the quorum
    // yet, so naming voters is refused rather than silently ignored.
    if QuorumSettings::from_config(&config)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(
            "config 'controller.quorum.voters': this build does not run the controller \
             quorum in `strata serve` yet; leave it empty for a single node"
                .to_string(),
        );
    }
    Ok(config)
}

/// `HOST:PORT`, optionally behind `PLAINTEXT://`; the first of a comma-separated list.
fn parse_address(key: &str, value: &str) -> Result<(String, u16), String> {
    let first = value.split(',').next().unwrap_or("").trim();
    let addr = first.strip_prefix("PLAINTEXT://").unwrap_or(first);
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("config '{key}': '{value}' is not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("config '{key}': '{port}' is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((
        if host.is_empty() {
            "0.0.0.0".to_string()
        } else {
            host.to_string()
        },
        port,
    ))
}

/// Raises the open-file soft limit to the hard limit: every partition holds files open, and the
/// usual soft limit (1024) runs out at a few hundred partitions. Logs both limits.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot read the open-file limit");
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, soft = before, hard = limit.rlim_max, "cannot raise the open-file limit");
        }
    }
    tracing::info!(
        soft_before = before,
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open-file limit"
    );
}

fn serve(args: ServeArgs) -> ExitCode {
    raise_open_file_limit();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = match parse_address("listeners", config.get("listeners")) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let advertised = match config.get("advertised.listeners") {
        "" => None,
        a => match parse_address("advertised.listeners", a) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config, listen, advertised)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    config: BrokerConfig,
    listen: (String, u16),
    advertised: Option<(String, u16)>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind((listen.0.as_str(), listen.1))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", listen.0, listen.1))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let endpoint = match advertised {
        Some((host, port)) => Endpoint { host, port },
        None => {
            let host = if local.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                local.ip().to_string()
            };
            Endpoint {
                host,
                port: local.port(),
            }
        }
    };
    // Before any partition opens: each registers its topic's counters with the recorder.
    let metrics = strata_broker::metrics::start(config.get("metrics.listener")).await?;
    let data_dir = PathBuf::from(config.get("log.dirs"));
    let config = Arc::new(config);
    let started = std::time::Instant::now();
    // Nothing there yet (or an empty directory made for us): not an unclean shutdown.
    let new_data_dir = match std::fs::read_dir(&data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    let (node, report) = Node::open(Arc::clone(&config), endpoint.clone(), &data_dir)
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
    let node = Arc::new(node);
    if new_data_dir {
        tracing::info!(
            data_dir = %data_dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage loaded: new data directory"
        );
    } else {
        tracing::info!(
            clean_shutdown = report.clean_shutdown,
            partitions = report.partitions,
            segments_scanned = report.segments_scanned,
            tails_cut = report.tails_cut,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage loaded"
        );
    }
    // Committed offsets and group metadata, replayed from __consumer_offsets before serving, so
    // no OffsetFetch ever sees a half-loaded group.
    let offsets = node
        .offsets
        .load()
        .map_err(|e| format!("cannot load __consumer_offsets: {e}"))?;
    tracing::info!(
        partitions = offsets.partitions,
        batches = offsets.batches,
        records = offsets.records,
        skipped = offsets.skipped,
        groups = offsets.groups,
        offsets = offsets.offsets,
        elapsed_ms = offsets.elapsed.as_millis() as u64,
        "committed offsets loaded"
    );
    // The groups as they were after their last rebalance; their members' sessions restart now,
    // and expire even before the first request.
    node.groups.load(node.offsets.take_loaded_groups());
    node.groups.start_timers(&node);
    if let Some(topic) = strata_broker::storage::fatal::fail_syncs_topic() {
        tracing::warn!(
            topic,
            "TEST HOOK {}: every msync of this topic fails",
            strata_broker::storage::fatal::FAIL_SYNCS_ENV
        );
    }
    tracing::info!(node = node.id.0, listen = %local, advertise = %format!("{}:{}", endpoint.host, endpoint.port), data = %data_dir.display(), "strata is serving");

    let checkpoint_every =
        Duration::from_millis(config.i64("log.flush.offset.checkpoint.interval.ms") as u64);
    let retention_every =
        Duration::from_millis(config.i64("log.retention.check.interval.ms") as u64);
    let producer_expiry_every =
        Duration::from_millis(config.i64("producer.id.expiration.check.interval.ms") as u64);
    let producer_expiration_ms = config.i64("producer.id.expiration.ms");
    let background = {
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let mut checkpoint = tokio::time::interval(checkpoint_every);
            let mut retention = tokio::time::interval(retention_every);
            let mut producer_expiry = tokio::time::interval(producer_expiry_every);
            loop {
                tokio::select! {
                    _ = checkpoint.tick() => {
                        if let Err(e) = node.partitions.write_recovery_checkpoint() {
                            tracing::error!(error = %e, "recovery checkpoint failed");
                        }
                    }
                    _ = retention.tick() => {
                        let deleted = node.partitions.apply_retention(strata_broker::clock::now_ms());
                        if deleted > 0 {
                            tracing::info!(segments = deleted, "retention deleted segments");
                        }
                    }
                    _ = producer_expiry.tick() => {
                        let now = strata_broker::clock::now_ms();
                        let removed = node.partitions.remove_expired_producers(now, producer_expiration_ms);
                        if removed > 0 {
                            tracing::info!(producers = removed, "expired idle producer ids");
                        }
                    }
                }
            }
        })
    };
    // One fatal path: a failed sync anywhere in storage is reported on this handle; the broker
    // then stops serving and exits non-zero, without a "clean" close that would sync again.
    let fatal = node.partitions.fatal().clone();
    let stop = {
        let fatal = fatal.clone();
        async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = fatal.wait() => {}
            }
        }
    };
    // Returns once every connection task has ended: no request touches a partition below.
    server::serve(listener, Arc::clone(&node), stop).await;
    if let Some((_, scrapes)) = metrics {
        scrapes.abort();
    }
    background.abort();
    // Wait for it to stop: a checkpoint it is writing finishes first (no await inside one).
    let _ = background.await;
    if let Some(why) = fatal.get() {
        return Err(format!("halted after a fatal storage error: {why}"));
    }
    // Every other task that can touch a partition stops before the close: the group timers and
    // group metadata writes (bounded: a write stuck on a dead disk must not hold the exit), and
    // the `flush.ms` timers.
    if !node.groups.stop(SHUTDOWN_TASKS_WAIT).await {
        tracing::warn!(
            waited_ms = SHUTDOWN_TASKS_WAIT.as_millis() as u64,
            "shutting down with group metadata writes still running"
        );
    }
    let flush_timers: Vec<_> = node
        .partitions
        .all_partitions()
        .iter()
        .filter_map(|p| p.stop_flush_timer())
        .collect();
    for timer in flush_timers {
        let _ = timer.await;
    }
    tracing::info!("shutting down: flushing and closing every partition");
    node.partitions
        .shutdown()
        .map_err(|e| format!("clean shutdown failed: {e}"))?;
    tracing::info!("clean shutdown complete");
    Ok(())
}

/// How long a shutdown waits for group metadata writes in flight.
const SHUTDOWN_TASKS_WAIT: Duration = Duration::from_secs(10);

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
