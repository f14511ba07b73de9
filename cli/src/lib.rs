//! The client subcommands of `strata` (everything but `serve`, which is `strata_broker::serve`),
//! built on `strata-client`. Each returns `Err(one-line message)` on failure; `main` prints it
//! and exits non-zero.

pub mod cluster;
pub mod consume;
pub mod group;
pub mod perf;
pub mod produce;
pub mod topic;

use std::time::Duration;

use clap::Args;
use strata_client::producer::{Acks, Compression};
use strata_client::ClientConfig;

/// How to reach the cluster; shared by every client subcommand.
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Bootstrap broker(s), HOST:PORT[,HOST:PORT...].
    #[arg(
        short = 'b',
        long = "bootstrap",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Give up when no broker answers within this many milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
}

impl ConnectionArgs {
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.bootstrap);
        c.connection.client_id = "strata-cli".to_string();
        c.connection.connect_timeout = Duration::from_millis(self.timeout_ms);
        c.connection.request_timeout = Duration::from_millis(self.timeout_ms.max(1_000) * 3);
        c
    }
}

/// Runs a client subcommand on a fresh runtime; returns the process exit code.
pub fn run_client<F: std::future::Future<Output = Result<(), String>>>(
    future: F,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(future) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::from(1)
        }
    }
}

/// `--acks`: 0, 1, all or -1.
pub fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(format!(
            "invalid --acks value '{other}': expected 0, 1, all or -1"
        )),
    }
}

/// `--compression`: none, gzip, snappy, lz4 or zstd.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        other => Err(format!(
            "invalid --compression value '{other}': expected none, gzip, snappy, lz4 or zstd"
        )),
    }
}

/// `-X KEY=VALUE` (`--producer-property`, like kafka-producer-perf-test's `--producer-props`):
/// sets a producer property by its Kafka name, after the flags. Known keys: enable.idempotence,
/// max.in.flight.requests.per.connection, acks, linger.ms, batch.size, buffer.memory,
/// compression.type, retries, retry.backoff.ms.
pub fn apply_producer_properties(
    config: &mut strata_client::producer::ProducerConfig,
    properties: &[String],
) -> Result<(), String> {
    for property in properties {
        let Some((key, value)) = property.split_once('=') else {
            return Err(format!(
                "invalid --producer-property '{property}': expected KEY=VALUE"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        let bad =
            |expected: &str| format!("invalid value '{value}' for {key}: expected {expected}");
        let number = |expected: &str| value.parse::<u64>().map_err(|_| bad(expected));
        match key {
            "enable.idempotence" => {
                config.enable_idempotence =
                    Some(value.parse::<bool>().map_err(|_| bad("true or false"))?)
            }
            "max.in.flight.requests.per.connection" => {
                config.max_in_flight = Some(number("a count >= 1")? as usize)
            }
            "acks" => config.acks = parse_acks(value)?,
            "linger.ms" => config.linger_ms = number("milliseconds")?,
            "batch.size" => config.batch_size = (number("bytes")? as usize).max(1),
            "buffer.memory" => config.buffer_memory = (number("bytes")? as usize).max(1),
            "compression.type" => config.compression = parse_compression(value)?,
            "retries" => config.retries = number("a count")?.min(u64::from(u32::MAX)) as u32,
            "retry.backoff.ms" => config.retry_backoff_ms = number("milliseconds")?,
            other => return Err(format!("unknown producer property '{other}'")),
        }
    }
    Ok(())
}

/// The metadata of `topic`, which must already exist (callers turn auto-creation off): a
/// missing topic is the one-line error "topic 'x' does not exist".
pub async fn existing_topic(
    cluster: &strata_client::Cluster,
    topic: &str,
) -> Result<strata_client::TopicInfo, String> {
    let metadata = cluster
        .refresh(&[topic.to_string()])
        .await
        .map_err(|e| e.to_string())?;
    match metadata.topics.get(topic) {
        // UNKNOWN_TOPIC_OR_PARTITION
        None => Err(format!("topic '{topic}' does not exist")),
        Some(t) if t.error_code == 3 => Err(format!("topic '{topic}' does not exist")),
        Some(t) => {
            match strata_client::ClientError::from_code(t.error_code, format!("topic '{topic}'")) {
                Some(e) => Err(e.to_string()),
                None => Ok(t.clone()),
            }
        }
    }
}

/// Connects an admin client that never auto-creates topics; `explain` turns a failure into the
/// calling command's one line.
pub async fn connect_admin(
    args: &ConnectionArgs,
    explain: fn(strata_client::ClientError, &str, &ConnectionArgs) -> String,
) -> Result<strata_client::admin::Admin, String> {
    let mut config = args.client_config();
    config.allow_auto_create_topics = false;
    let cluster = strata_client::Cluster::connect(config)
        .await
        .map_err(|e| explain(e, "", args))?;
    Ok(strata_client::admin::Admin::new(cluster))
}

/// The one line for "nobody answered at the bootstrap address".
pub fn no_broker_line(args: &ConnectionArgs, timeout_ms: u64) -> String {
    format!(
        "no broker reachable at {} within {timeout_ms} ms",
        args.bootstrap
    )
}

/// Left-aligned columns separated by two spaces, one line per row, trailing spaces trimmed.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Connects and starts a producer with the CLI's timeouts: requests time out after the
/// connection's request timeout, and a record is given up after three of those.
pub async fn connect_producer(
    connection: &ConnectionArgs,
    config: strata_client::producer::ProducerConfig,
) -> Result<strata_client::producer::Producer, String> {
    let client_config = connection.client_config();
    let request_timeout = client_config.connection.request_timeout;
    let cluster = strata_client::Cluster::connect(client_config)
        .await
        .map_err(|e| e.to_string())?;
    let config = strata_client::producer::ProducerConfig {
        request_timeout,
        delivery_timeout: request_timeout * 3,
        ..config
    };
    strata_client::producer::Producer::new(cluster, config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_client::producer::{Acks, ProducerConfig};

    #[test]
    fn producer_properties_set_kafka_named_keys_and_refuse_unknown_or_bad_ones() {
        let mut config = ProducerConfig::default();
        let props = [
            "enable.idempotence=false",
            "max.in.flight.requests.per.connection=5",
            "acks=1",
            "linger.ms=7",
        ]
        .map(String::from);
        apply_producer_properties(&mut config, &props).unwrap();
        assert_eq!(config.enable_idempotence, Some(false));
        assert_eq!(config.max_in_flight, Some(5));
        assert_eq!(config.acks, Acks::Leader);
        assert_eq!(config.linger_ms, 7);
        for bad in [
            "enable.idempotence=yes",
            "no.such.key=1",
            "linger.ms",
            "batch.size=-1",
        ] {
            let result = apply_producer_properties(&mut config, &[bad.to_string()]);
            assert!(result.is_err(), "{bad}");
        }
    }
}
