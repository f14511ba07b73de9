//! `strata serve`: a broker's start-up and shutdown, called by the `strata` binary (`cli/`) once it
//! has parsed the flags. Config assembly (defaults < `--config` file < `--set` < flags), the
//! listener, opening storage and replaying committed offsets before the first request, the
//! background checkpoint/retention/producer-expiry task, and the shutdown order.
//!
//! Invariants:
//! - Nothing is served before storage is open and `__consumer_offsets` is replayed.
//! - On SIGTERM/SIGINT connections stop first, then every task that can touch a partition (the
//!   background task, group timers and metadata writes, `flush.ms` timers), then partitions close.
//! - A fatal storage error stops serving and exits non-zero without a clean close (which would
//!   sync again).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{BrokerConfig, BrokerSettings};
use crate::controller::quorum::QuorumSettings;
use crate::node::{Endpoint, Node};
use crate::server;

/// What `strata serve`'s flags say; each `None` leaves the key to `--set`, the file or the
/// default.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `node.id`.
    pub node_id: Option<u32>,
    /// `listeners`.
    pub listen: Option<String>,
    /// `advertised.listeners`.
    pub advertise: Option<String>,
    /// `log.dirs`.
    pub data_dir: Option<PathBuf>,
    /// A Kafka-style properties file of `key=value` lines.
    pub config: Option<PathBuf>,
    /// `KEY=VALUE` overrides of the file, in order.
    pub set: Vec<String>,
    /// `process.roles`.
    pub roles: Option<String>,
    /// `controller.quorum.voters`.
    pub voters: Option<String>,
    /// `controller.listener`.
    pub controller_listen: Option<String>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `metrics.listener`.
    pub metrics_listen: Option<String>,
}

/// Builds the configuration: defaults, then the file, then `--set`, then the explicit flags.
pub fn build_config(args: &ServeOptions) -> Result<BrokerConfig, String> {
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
        ("process.roles", args.roles.clone()),
        ("controller.quorum.voters", args.voters.clone()),
        ("controller.listener", args.controller_listen.clone()),
        ("broker.rack", args.rack.clone()),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            config.set(key, &v).map_err(|e| e.to_string())?;
        }
    }
    // The controller quorum's keys are checked before anything starts.
    QuorumSettings::from_config(&config).map_err(|e| e.to_string())?;
    Ok(config)
}

/// `HOST:PORT`, optionally behind `PLAINTEXT://`; the first of a comma-separated list.
pub fn parse_address(key: &str, value: &str) -> Result<(String, u16), String> {
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

/// Runs a broker until SIGTERM/SIGINT or a fatal storage error, on a runtime of its own; returns
/// the process exit code (2: the configuration is refused, 1: the broker failed).
pub fn serve(args: ServeOptions) -> ExitCode {
    raise_open_file_limit();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match BrokerSettings::from_config(&config) {
        Ok(s) => s,
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
    match runtime.block_on(run(config, settings, listen, advertised)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Serves `config` on `listen` (advertising `advertised`, else the bound address) until
/// SIGTERM/SIGINT or a fatal storage error, then shuts down; `Err` is a one-line reason.
pub async fn run(
    config: BrokerConfig,
    settings: BrokerSettings,
    listen: (String, u16),
    advertised: Option<(String, u16)>,
) -> Result<(), String> {
    let roles = crate::controller::quorum::settings::parse_roles(config.get("process.roles"))
        .map_err(|e| e.to_string())?;
    if !roles.broker {
        return run_controller_only(config, settings).await;
    }
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
    let metrics = crate::metrics::start(config.get("metrics.listener")).await?;
    let data_dir = PathBuf::from(config.get("log.dirs"));
    let config = Arc::new(config);
    let started = std::time::Instant::now();
    // Nothing there yet (or an empty directory made for us): not an unclean shutdown.
    let new_data_dir = match std::fs::read_dir(&data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    let (node, report) =
        Node::open_with(Arc::clone(&config), settings, endpoint.clone(), &data_dir)
            .await
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
    // Offsets of topics deleted while this broker was down, or before it wrote their tombstones.
    node.forget_offsets_of_deleted_topics().await;
    // The groups as they were after their last rebalance; their members' sessions restart now,
    // and expire even before the first request.
    node.groups.load(node.offsets.take_loaded_groups());
    node.groups.start_timers();
    let follower = tokio::spawn(Arc::clone(&node).follow_metadata());
    let duties = tokio::spawn(crate::controller::duties::run(
        node.controller.clone(),
        Some(node.id),
        duty_timing(&node.settings),
    ));
    if let Some(topic) = crate::storage::fatal::fail_syncs_topic() {
        tracing::warn!(
            topic,
            "TEST HOOK {}: every msync of this topic fails",
            crate::storage::fatal::FAIL_SYNCS_ENV
        );
    }
    tracing::info!(node = node.id.0, listen = %local, advertise = %format!("{}:{}", endpoint.host, endpoint.port), data = %data_dir.display(), "strata is serving");

    let checkpoint_every = node.settings.log.checkpoint_interval;
    let retention_every = node.settings.log.retention_check_interval;
    let producer_expiry_every = node.settings.producer_ids.expiration_check_interval;
    let producer_expiration_ms = node.settings.producer_ids.expiration_ms;
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
                        let deleted = node.partitions.apply_retention(crate::clock::now_ms());
                        if deleted > 0 {
                            tracing::info!(segments = deleted, "retention deleted segments");
                        }
                    }
                    _ = producer_expiry.tick() => {
                        let now = crate::clock::now_ms();
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
    follower.abort();
    let _ = follower.await;
    // No follower appends while the partitions close.
    node.replicas.shutdown().await;
    duties.abort();
    let _ = duties.await;
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
    node.controller.shutdown().await;
    tracing::info!("shutting down: flushing and closing every partition");
    node.partitions
        .shutdown()
        .map_err(|e| format!("clean shutdown failed: {e}"))?;
    tracing::info!("clean shutdown complete");
    Ok(())
}

/// A node with only the controller role: a voter of the quorum and, while it leads, the active
/// controller's duties; no Kafka listener, no partitions.
async fn run_controller_only(
    config: BrokerConfig,
    broker_settings: BrokerSettings,
) -> Result<(), String> {
    let metrics = crate::metrics::start(config.get("metrics.listener")).await?;
    let data_dir = PathBuf::from(config.get("log.dirs"));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let settings =
        crate::controller::member::settings_from_config(&config).map_err(|e| e.to_string())?;
    let id = broker_settings.node_id;
    let controller = crate::controller::member::Controller::start(settings, &data_dir, id)
        .await
        .map_err(|e| format!("cannot start the controller: {e}"))?;
    let duties = tokio::spawn(crate::controller::duties::run(
        controller.clone(),
        None,
        duty_timing(&broker_settings),
    ));
    tracing::info!(node = id.0, controller = %controller.quorum().local_addr(), data = %data_dir.display(), "strata is serving as a controller");
    shutdown_signal().await;
    if let Some((_, scrapes)) = metrics {
        scrapes.abort();
    }
    duties.abort();
    let _ = duties.await;
    controller.shutdown().await;
    tracing::info!("clean shutdown complete");
    Ok(())
}

/// The heartbeat and session of brokers, as the controller duties use them.
fn duty_timing(settings: &BrokerSettings) -> crate::controller::duties::Timing {
    crate::controller::duties::Timing {
        heartbeat_interval: settings.liveness.heartbeat_interval,
        session_timeout: settings.liveness.session_timeout,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_give_the_documented_single_node() {
        let config = build_config(&ServeOptions::default()).unwrap();
        assert_eq!(config.i64("node.id"), 1);
        assert_eq!(
            parse_address("listeners", config.get("listeners")).unwrap(),
            ("127.0.0.1".to_string(), 9092)
        );
        assert_eq!(config.get("log.dirs"), "./strata-data");
    }

    #[test]
    fn a_flag_beats_set_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.properties");
        std::fs::write(&file, "node.id=7\nnum.partitions=3\nlog.dirs=/from/file\n").unwrap();
        let options = ServeOptions {
            config: Some(file),
            set: vec!["node.id=8".to_string(), "log.dirs=/from/set".to_string()],
            data_dir: Some(PathBuf::from("/from/flag")),
            ..ServeOptions::default()
        };
        let config = build_config(&options).unwrap();
        assert_eq!(config.i64("num.partitions"), 3, "the file");
        assert_eq!(config.i64("node.id"), 8, "--set over the file");
        assert_eq!(config.get("log.dirs"), "/from/flag", "the flag over --set");
    }

    #[test]
    fn a_bad_set_or_flag_is_refused_naming_it() {
        let bad_set = ServeOptions {
            set: vec!["no.such.key=1".to_string()],
            ..ServeOptions::default()
        };
        assert!(build_config(&bad_set).unwrap_err().contains("no.such.key"));
        let no_equals = ServeOptions {
            set: vec!["novalue".to_string()],
            ..ServeOptions::default()
        };
        assert!(build_config(&no_equals).unwrap_err().contains("novalue"));
        let missing_file = ServeOptions {
            config: Some(PathBuf::from("/nonexistent/strata.properties")),
            ..ServeOptions::default()
        };
        assert!(build_config(&missing_file)
            .unwrap_err()
            .contains("/nonexistent/strata.properties"));
    }

    #[test]
    fn addresses_take_the_first_listener_without_its_scheme() {
        let parse = |v| parse_address("listeners", v);
        assert_eq!(parse("127.0.0.1:9092").unwrap(), ("127.0.0.1".into(), 9092));
        assert_eq!(
            parse("PLAINTEXT://10.0.0.1:19092,PLAINTEXT://10.0.0.2:19092").unwrap(),
            ("10.0.0.1".into(), 19092)
        );
        assert_eq!(parse(":0").unwrap(), ("0.0.0.0".into(), 0));
        assert_eq!(parse("[::1]:9092").unwrap(), ("::1".into(), 9092));
        assert!(parse("not-an-address").unwrap_err().contains("listeners"));
        assert!(parse("host:99999").unwrap_err().contains("99999"));
    }
}
