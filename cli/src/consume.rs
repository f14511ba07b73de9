//! `strata consume`: prints the records of a topic, like `kafka-console-consumer`.
//!
//! Without `--group`, partitions are assigned directly and nothing is committed: it starts at the
//! end of each partition unless `--from-beginning` or `--offset N`, and reads every partition
//! unless `--partition P`. With `--group G` it joins the group, reads the partitions the group
//! gives it from the group's committed offsets (`--from-beginning` / the end when there are
//! none), and commits what it printed: every second, and on exit. It stops after `--count N`
//! records, or once nothing arrived for `--idle-timeout-ms`, else runs until killed. Never
//! auto-creates the topic. In a group, Ctrl-C or SIGTERM stops it the same way (commit what was
//! printed, leave the group), so the next member gets the partitions at once instead of after
//! the session timeout; a second signal during that exits at once. `--rack R` sets `client.rack`,
//! so the leader may send it to a follower in that rack (KIP-392).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::Args;
use strata_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
use strata_client::group::GroupConfig;
use strata_client::Cluster;
use tokio::time::Instant;

/// Longest single poll, so `--idle-timeout-ms` and `--count` are checked often.
const POLL_MAX: Duration = Duration::from_millis(1_000);
/// How often a group consumer commits what it printed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(1_000);

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connection: super::ConnectionArgs,
    /// Topic to read.
    pub topic: String,
    /// Start at the beginning of each partition (default: the end, only new records).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read; an offset outside the log is an error).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p', value_name = "P")]
    pub partition: Option<i32>,
    /// Join this consumer group: read the partitions it assigns, from its committed offsets,
    /// and commit what was printed.
    #[arg(long, short = 'g', value_name = "GROUP", conflicts_with_all = ["offset", "partition"])]
    pub group: Option<String>,
    /// Exit after printing this many records.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Exit (status 0) when no record arrived for this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Output template per record: %t topic, %p partition, %o offset, %T timestamp (ms),
    /// %k key, %v value, %h headers (k=v,k=v), %% a percent sign; \n, \t, \\ escapes.
    /// A null key, value or header value prints as nothing.
    #[arg(long, short = 'f', default_value = "%v\\n", value_name = "FORMAT")]
    pub format: String,
    /// fetch.max.wait.ms: how long the broker holds a fetch waiting for new records.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub fetch_max_wait_ms: i32,
    /// client.rack: this consumer's rack, so a leader may send it to a follower in the same
    /// rack (KIP-392).
    #[arg(long, value_name = "RACK", default_value = "")]
    pub rack: String,
}

pub async fn run(args: ConsumeArgs) -> Result<(), String> {
    let format = Format::parse(&args.format)?;
    let mut config = args.connection.client_config();
    config.allow_auto_create_topics = false;
    let cluster = Cluster::connect(config).await.map_err(|e| e.to_string())?;

    let topic = args.topic.as_str();
    let info = super::existing_topic(&cluster, topic).await?;
    if let Some(group) = args.group.clone() {
        if group.is_empty() {
            return Err("--group must not be empty".into());
        }
        let consumer = Consumer::new(
            cluster,
            ConsumerConfig {
                fetch_max_wait_ms: args.fetch_max_wait_ms.max(0),
                client_rack: args.rack.clone(),
                auto_offset_reset: if args.from_beginning {
                    AutoOffsetReset::Earliest
                } else {
                    AutoOffsetReset::Latest
                },
                // What is committed is what was printed, not what was fetched.
                group: Some(GroupConfig {
                    enable_auto_commit: false,
                    ..GroupConfig::new(group)
                }),
                ..ConsumerConfig::default()
            },
        );
        return print_records(consumer, &args, &format, true).await;
    }
    let partitions: Vec<i32> = match args.partition {
        Some(p) if info.partitions.iter().any(|i| i.partition == p) => vec![p],
        Some(p) => {
            return Err(format!(
                "topic '{topic}' has no partition {p} (it has {})",
                info.partitions.len()
            ))
        }
        None => info.partitions.iter().map(|p| p.partition).collect(),
    };
    if partitions.is_empty() {
        return Err(format!("topic '{topic}' has no partitions"));
    }

    let auto_offset_reset = if args.from_beginning {
        AutoOffsetReset::Earliest
    } else if args.offset.is_some() {
        AutoOffsetReset::None
    } else {
        AutoOffsetReset::Latest
    };
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig {
            fetch_max_wait_ms: args.fetch_max_wait_ms.max(0),
            client_rack: args.rack.clone(),
            auto_offset_reset,
            ..ConsumerConfig::default()
        },
    );
    let assignment: Vec<(String, i32)> =
        partitions.iter().map(|p| (topic.to_string(), *p)).collect();
    consumer.assign(&assignment);
    // Resolve every starting position now, so records produced after start-up are seen.
    let start = match args.offset {
        Some(n) => SeekTo::Offset(n),
        None if args.from_beginning => SeekTo::Beginning,
        None => SeekTo::End,
    };
    for p in &partitions {
        consumer
            .seek(topic, *p, start)
            .await
            .map_err(|e| format!("cannot position {topic}/{p}: {e}"))?;
    }
    print_records(consumer, &args, &format, false).await
}

/// Prints records until `--count` or `--idle-timeout-ms`; in a group, commits what it printed
/// every `COMMIT_INTERVAL` and on the way out, then leaves the group.
async fn print_records(
    mut consumer: Consumer,
    args: &ConsumeArgs,
    format: &Format,
    in_group: bool,
) -> Result<(), String> {
    let mut stop = None;
    if in_group {
        // Installed before joining, so a signal at any point leaves the group.
        stop = Some(StopSignals::install()?);
        consumer
            .subscribe(&[args.topic.as_str()])
            .map_err(|e| e.to_string())?;
    }
    let mut printed_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let result = print_loop(
        &mut consumer,
        args,
        format,
        in_group,
        &mut printed_offsets,
        stop.as_mut(),
    )
    .await;
    let Some(mut stop) = stop else {
        return result;
    };
    let leave = async {
        // Commit what was printed even after an output error; report the first failure.
        let committed = consumer
            .commit_offsets_sync(&printed_offsets)
            .await
            .map_err(|e| format!("cannot commit offsets: {e}"));
        let closed = consumer.close().await.map_err(|e| e.to_string());
        committed.and(closed)
    };
    tokio::select! {
        left = leave => result.and(left),
        () = stop.recv() => Err("interrupted again: exited without committing or leaving the group".into()),
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, once handled by the process instead of killing it.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(StopSignals {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next signal.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

async fn print_loop(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    format: &Format,
    in_group: bool,
    printed_offsets: &mut BTreeMap<(String, i32), i64>,
    mut stop: Option<&mut StopSignals>,
) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed: u64 = 0;
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let mut last_activity = Instant::now();
    let mut line = Vec::new();
    let mut next_commit = Instant::now() + COMMIT_INTERVAL;
    let mut committed = printed_offsets.clone();
    loop {
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
        let mut wait = POLL_MAX;
        if let Some(idle) = idle {
            let left = idle.saturating_sub(last_activity.elapsed());
            if left.is_zero() {
                break;
            }
            wait = wait.min(left);
        }
        // A signal cancels only the poll: whatever it fetched was not printed, so not committed.
        let polled = match stop.as_deref_mut() {
            Some(stop) => tokio::select! {
                polled = consumer.poll(wait) => Some(polled),
                () = stop.recv() => None,
            },
            None => Some(consumer.poll(wait).await),
        };
        let Some(polled) = polled else { break };
        let records = polled.map_err(|e| e.to_string())?;
        if !records.is_empty() {
            last_activity = Instant::now();
        }
        for r in &records {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            line.clear();
            format.render(r, &mut line);
            if let Err(e) = out.write_all(&line) {
                return output_error(e);
            }
            printed += 1;
            printed_offsets.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        if let Err(e) = out.flush() {
            return output_error(e);
        }
        if in_group && Instant::now() >= next_commit && *printed_offsets != committed {
            next_commit = Instant::now() + COMMIT_INTERVAL;
            consumer
                .commit_offsets_sync(printed_offsets)
                .await
                .map_err(|e| format!("cannot commit offsets: {e}"))?;
            committed = printed_offsets.clone();
        }
    }
    out.flush().or_else(output_error)
}

/// A closed stdout (`| head`) ends the command quietly; other write errors are reported.
fn output_error(e: std::io::Error) -> Result<(), String> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("cannot write to stdout: {e}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
}

/// A parsed `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Format(Vec<Piece>);

impl Format {
    fn parse(template: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('T') => Piece::Timestamp,
                        Some('k') => Piece::Key,
                        Some('v') => Piece::Value,
                        Some('h') => Piece::Headers,
                        Some('%') => {
                            text.push(b'%');
                            continue;
                        }
                        Some(other) => {
                            return Err(format!(
                            "unknown --format directive '%{other}' (use %t %p %o %T %k %v %h %%)"
                        ))
                        }
                        None => return Err("--format ends with a lone '%'".to_string()),
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                }
                '\\' => match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('r') => text.push(b'\r'),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        text.push(b'\\');
                        let mut buf = [0u8; 4];
                        text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => text.push(b'\\'),
                },
                c => {
                    let mut buf = [0u8; 4];
                    text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format(pieces))
    }

    fn render(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
                Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
                Piece::Headers => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(v.as_deref().unwrap_or_default());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 41,
            timestamp: 1700,
            key: Some(Bytes::from("k")),
            value: None,
            headers: vec![("a".into(), Some(Bytes::from("1"))), ("b".into(), None)],
        }
    }

    fn render(template: &str) -> String {
        let mut out = Vec::new();
        Format::parse(template).unwrap().render(&record(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_every_directive_and_escape() {
        assert_eq!(render("%t|%p|%o|%T|%k|%v|%h\\n"), "t|2|41|1700|k||a=1,b=\n");
        assert_eq!(render("%%%k\\t\\\\x"), "%k\t\\x");
        assert_eq!(render("ünï %k"), "ünï k");
    }

    #[test]
    fn refuses_unknown_directives() {
        assert!(Format::parse("%x").unwrap_err().contains("%x"));
        assert!(Format::parse("abc%").is_err());
    }
}
