//! `strata perf produce|consume`: load generators in the words of Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test`.
//!
//! `perf produce` sends `--records` records of `--record-size` bytes (one shared payload, so the
//! generator costs next to nothing), optionally paced to `--throughput` records/s and keyed with
//! one of `--keys` keys. A record's latency runs from the `send()` call to its delivery. Every
//! second it prints the last second's figures, at the end the totals with percentiles. MB are
//! MiB (1024 * 1024 bytes of record values), as in Kafka's tool.
//!
//! `perf consume` reads every partition of a topic from the beginning until `--records` records
//! arrived, printing a line per second and the totals; it fails when no record arrived for
//! `--timeout-ms`.

use super::{parse_acks, parse_compression};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use strata_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, SeekTo};
use strata_client::producer::{DeliveryFuture, ProducerConfig, ProducerRecord};
use strata_client::Cluster;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often a progress line is printed.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// At most this many latencies are kept for the percentiles (every n-th record), as in Kafka.
const MAX_LATENCY_SAMPLES: u64 = 500_000;
const MB: f64 = 1024.0 * 1024.0;

#[derive(Subcommand, Debug)]
pub enum PerfCommand {
    /// Produce records as fast as possible (or at --throughput) and report throughput and latency.
    Produce(PerfProduceArgs),
    /// Read records from the beginning of every partition and report throughput.
    Consume(PerfConsumeArgs),
}

#[derive(Args, Debug)]
pub struct PerfProduceArgs {
    #[command(flatten)]
    pub connection: super::ConnectionArgs,
    /// Topic to produce to (auto-created if the broker allows it).
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    /// Number of records to produce.
    #[arg(long, value_name = "N")]
    pub records: u64,
    /// Size of each record's value in bytes.
    #[arg(long, value_name = "BYTES")]
    pub record_size: usize,
    /// Pace to about this many records/s; -1: as fast as possible.
    #[arg(
        long,
        default_value_t = -1.0,
        allow_hyphen_values = true,
        value_name = "R"
    )]
    pub throughput: f64,
    /// Acknowledgements to wait for: 0, 1, all (or -1).
    #[arg(
        long,
        default_value = "all",
        allow_hyphen_values = true,
        value_name = "ACKS"
    )]
    pub acks: String,
    /// Give each record one of K keys (k0..k{K-1}, round robin); 0: keyless.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub keys: u64,
    /// Compression codec: none, gzip, snappy, lz4, zstd.
    #[arg(short = 'z', long, default_value = "none", value_name = "CODEC")]
    pub compression: String,
    /// How long a batch waits for more records (`linger.ms`).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// Batch size in bytes (`batch.size`).
    #[arg(long, default_value_t = 1_000_000, value_name = "BYTES")]
    pub batch_size: usize,
    /// Bytes of records queued or in flight before sending waits (`buffer.memory`).
    #[arg(long, default_value_t = 32 << 20, value_name = "BYTES")]
    pub buffer_memory: usize,
    /// A producer property by its Kafka name, applied after the flags (repeatable), e.g.
    /// `-X enable.idempotence=false -X max.in.flight.requests.per.connection=5`.
    #[arg(short = 'X', long = "producer-property", value_name = "KEY=VALUE")]
    pub producer_properties: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PerfConsumeArgs {
    /// Bootstrap broker(s); --timeout-ms is both the connect timeout and the longest wait for
    /// the next record before giving up.
    #[command(flatten)]
    pub connection: super::ConnectionArgs,
    /// Topic to read.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    /// Number of records to read.
    #[arg(long, value_name = "N")]
    pub records: u64,
}

pub async fn run(command: PerfCommand) -> Result<(), String> {
    match command {
        PerfCommand::Produce(args) => produce(args).await,
        PerfCommand::Consume(args) => consume(args).await,
    }
}

fn print_line(line: &str) {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // A closed stdout must not stop the measurement.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Milliseconds with sub-microsecond precision.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Figures of one reporting window (or of the whole run).
#[derive(Debug, Default, Clone)]
struct Window {
    count: u64,
    bytes: u64,
    latency_sum: Duration,
    latency_max: Duration,
}

impl Window {
    fn add(&mut self, bytes: u64, latency: Duration) {
        self.count += 1;
        self.bytes += bytes;
        self.latency_sum += latency;
        self.latency_max = self.latency_max.max(latency);
    }

    fn rates(&self, elapsed: Duration) -> (f64, f64) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        (self.count as f64 / secs, self.bytes as f64 / MB / secs)
    }

    fn avg_latency_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            ms(self.latency_sum) / self.count as f64
        }
    }

    /// Kafka's progress line.
    fn progress_line(&self, elapsed: Duration) -> String {
        let (rps, mbps) = self.rates(elapsed);
        format!(
            "{} records sent, {rps:.1} records/sec ({mbps:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
            self.count,
            self.avg_latency_ms(),
            ms(self.latency_max)
        )
    }
}

/// The value at quantile `q` of sorted `samples` (nearest rank, as Kafka's tool).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i]
}

/// Kafka's total line.
fn total_line(total: &Window, elapsed: Duration, samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let (rps, mbps) = total.rates(elapsed);
    let p = |q| ms(percentile(samples, q));
    format!(
        "{} records sent, {rps:.1} records/sec ({mbps:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
        total.count,
        total.avg_latency_ms(),
        ms(total.latency_max),
        p(0.5),
        p(0.95),
        p(0.99),
        p(0.999)
    )
}

/// A delivery with the time its `send()` started (a plain struct, not a boxed future: one
/// allocation less per record).
struct Timed {
    sent: Instant,
    delivery: DeliveryFuture,
}

impl Future for Timed {
    type Output = (Instant, strata_client::Result<()>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let sent = self.sent;
        // The offset only: no `RecordMetadata` (and its topic string) per record.
        self.delivery.poll_offset(cx).map(|r| (sent, r.map(|_| ())))
    }
}

/// Deliveries handed to the collector at once.
const CHUNK: usize = 256;

/// Sends the deliveries of `chunk` to the collector (if any).
fn hand_over(tx: &mpsc::UnboundedSender<Vec<Timed>>, chunk: &mut Vec<Timed>, gone: &mut bool) {
    if chunk.is_empty() {
        return;
    }
    let full = std::mem::replace(chunk, Vec::with_capacity(CHUNK));
    if tx.send(full).is_err() {
        *gone = true;
    }
}

/// What the collector found.
struct Outcome {
    total: Window,
    failed: u64,
    first_error: Option<String>,
    /// When the last record was answered.
    end: Instant,
}

/// Takes the answered deliveries at the head of each partition's queue (a partition's records
/// are answered in the order they were sent), so only the oldest delivery of each partition
/// waits for a wake-up: one per batch, not one per record. Ready once one was taken.
fn take_answered(
    queues: &mut [VecDeque<Timed>],
    cx: &mut Context<'_>,
    answered: &mut Vec<(Instant, strata_client::Result<()>)>,
) -> Poll<()> {
    for queue in queues.iter_mut() {
        while let Some(front) = queue.front_mut() {
            match Pin::new(front).poll(cx) {
                Poll::Ready(r) => {
                    answered.push(r);
                    queue.pop_front();
                }
                Poll::Pending => break,
            }
        }
    }
    if answered.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(())
    }
}

/// Awaits deliveries as they are answered, prints a progress line per second, and returns the
/// totals once the sender has hung up and every delivery is answered.
async fn collect(
    mut deliveries: mpsc::UnboundedReceiver<Vec<Timed>>,
    record_size: u64,
    expected: u64,
    start: Instant,
    samples: std::sync::Arc<std::sync::Mutex<Vec<Duration>>>,
) -> Outcome {
    let sample_every = (expected / expected.clamp(1, MAX_LATENCY_SAMPLES)).max(1);
    // Deliveries not answered yet, per partition, oldest first.
    let mut queues: Vec<VecDeque<Timed>> = Vec::new();
    let mut in_flight: usize = 0;
    let mut answered = Vec::new();
    let mut window = Window::default();
    let mut window_start = start;
    let mut total = Window::default();
    let (mut failed, mut first_error): (u64, Option<String>) = (0, None);
    let mut ticker = tokio::time::interval_at(start + REPORT_INTERVAL, REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    let mut local_samples = Vec::with_capacity(expected.min(MAX_LATENCY_SAMPLES) as usize + 1);
    let mut end = start;
    loop {
        tokio::select! {
            biased;
            _ = std::future::poll_fn(|cx| take_answered(&mut queues, cx, &mut answered)),
                if in_flight > 0 =>
            {
                // One clock read for every delivery answered since the last look.
                let now = Instant::now();
                end = now;
                in_flight -= answered.len();
                for (sent, result) in answered.drain(..) {
                    match result {
                        Ok(()) => {
                            let latency = now.saturating_duration_since(sent);
                            if total.count % sample_every == 0 {
                                local_samples.push(latency);
                            }
                            window.add(record_size, latency);
                            total.add(record_size, latency);
                        }
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
            next = deliveries.recv(), if open => match next {
                Some(chunk) => {
                    in_flight += chunk.len();
                    for d in chunk {
                        let p = d.delivery.partition().max(0) as usize;
                        if p >= queues.len() {
                            queues.resize_with(p + 1, VecDeque::new);
                        }
                        queues[p].push_back(d);
                    }
                }
                None => open = false,
            },
            now = ticker.tick() => {
                print_line(&window.progress_line(now.saturating_duration_since(window_start)));
                window = Window::default();
                window_start = now;
            }
        }
        if !open && in_flight == 0 {
            break;
        }
    }
    *samples.lock().unwrap_or_else(|p| p.into_inner()) = local_samples;
    Outcome {
        total,
        failed,
        first_error,
        end,
    }
}

async fn produce(args: PerfProduceArgs) -> Result<(), String> {
    let acks = parse_acks(&args.acks)?;
    let compression = parse_compression(&args.compression)?;
    if args.throughput == 0.0 || args.throughput.is_nan() {
        return Err(format!(
            "invalid --throughput {}: expected records/s > 0, or -1 for unlimited",
            args.throughput
        ));
    }
    if args.batch_size == 0 {
        return Err("invalid --batch-size 0: must be > 0".to_string());
    }
    let mut config = ProducerConfig {
        acks,
        linger_ms: args.linger_ms,
        batch_size: args.batch_size,
        buffer_memory: args.buffer_memory.max(1),
        compression,
        ..ProducerConfig::default()
    };
    super::apply_producer_properties(&mut config, &args.producer_properties)?;
    let producer = super::connect_producer(&args.connection, config).await?;

    // Kafka's tool sends random upper-case letters; one payload shared by every record.
    let payload: Bytes = (0..args.record_size)
        .map(|i| b'A' + ((i as u64).wrapping_mul(2_654_435_761) % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let keys: Vec<Bytes> = (0..args.keys.min(1 << 20))
        .map(|k| Bytes::from(format!("k{k}")))
        .collect();

    let start = Instant::now();
    // Records get their CreateTime from the one clock read per record (`sent`, monotonic)
    // added to the wall clock at the start, rather than from a second read of the clock.
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::unbounded_channel::<Vec<Timed>>();
    let collector = tokio::spawn(collect(
        rx,
        args.record_size as u64,
        args.records,
        start,
        std::sync::Arc::clone(&samples),
    ));

    let pace = (args.throughput > 0.0).then(|| Duration::from_secs_f64(1.0 / args.throughput));
    let mut send_error = None;
    // Deliveries go to the collector in chunks (a channel send per record costs more than the
    // producer's own work); a chunk is handed over when full and before anything that may wait,
    // so the collector sees every delivery long before it can be answered.
    let mut chunk: Vec<Timed> = Vec::with_capacity(CHUNK);
    let mut collector_gone = false;
    for i in 0..args.records {
        let mut sent = Instant::now();
        if let Some(pace) = pace {
            // Sleep (never spin) until this record's slot; late records go out at once.
            let due = start + pace.mul_f64(i as f64);
            if due > sent {
                hand_over(&tx, &mut chunk, &mut collector_gone);
                tokio::time::sleep_until(due).await;
                sent = Instant::now();
            }
        }
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: None,
            key: (!keys.is_empty()).then(|| keys[(i % keys.len() as u64) as usize].clone()),
            value: Some(payload.clone()),
            headers: Vec::new(),
            timestamp: Some(start_ms + sent.saturating_duration_since(start).as_millis() as i64),
        };
        let mut sending = std::pin::pin!(producer.send(record));
        let result = match futures::poll!(sending.as_mut()) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                // The buffer is full (or metadata is on its way): hand over first.
                hand_over(&tx, &mut chunk, &mut collector_gone);
                sending.await
            }
        };
        match result {
            Ok(delivery) => {
                chunk.push(Timed { sent, delivery });
                if chunk.len() >= CHUNK {
                    hand_over(&tx, &mut chunk, &mut collector_gone);
                }
                if collector_gone {
                    break;
                }
            }
            Err(e) => {
                send_error = Some(e.to_string());
                break;
            }
        }
    }
    hand_over(&tx, &mut chunk, &mut collector_gone);
    producer.flush().await;
    drop(tx);
    let outcome = collector
        .await
        .map_err(|e| format!("internal error waiting for acknowledgements: {e}"))?;
    let elapsed = outcome.end.saturating_duration_since(start);
    let mut samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    if outcome.total.count > 0 {
        print_line(&total_line(&outcome.total, elapsed, &mut samples));
    }
    if let Some(e) = send_error {
        return Err(format!(
            "{e} ({} record(s) acknowledged before it, {} failed)",
            outcome.total.count, outcome.failed
        ));
    }
    if outcome.failed > 0 {
        return Err(format!(
            "{} of {} record(s) failed; first error: {}",
            outcome.failed,
            outcome.failed + outcome.total.count,
            outcome.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

async fn consume(args: PerfConsumeArgs) -> Result<(), String> {
    let mut config = args.connection.client_config();
    config.allow_auto_create_topics = false;
    let cluster = Cluster::connect(config).await.map_err(|e| e.to_string())?;
    let topic = args.topic.as_str();
    let info = super::existing_topic(&cluster, topic).await?;
    let partitions: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
    if partitions.is_empty() {
        return Err(format!("topic '{topic}' has no partitions"));
    }
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    let assignment: Vec<(String, i32)> =
        partitions.iter().map(|p| (topic.to_string(), *p)).collect();
    consumer.assign(&assignment);
    for p in &partitions {
        consumer
            .seek(topic, *p, SeekTo::Beginning)
            .await
            .map_err(|e| format!("cannot position {topic}/{p}: {e}"))?;
    }

    let idle = Duration::from_millis(args.connection.timeout_ms.max(1));
    let start = Instant::now();
    let mut last_record = start;
    let mut window_start = start;
    let (mut window_count, mut window_bytes) = (0u64, 0u64);
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut timed_out = false;
    while count < args.records {
        let now = Instant::now();
        if now >= window_start + REPORT_INTERVAL {
            let secs = now.saturating_duration_since(window_start).as_secs_f64();
            print_line(&format!(
                "{window_count} records consumed, {:.1} records/sec ({:.2} MB/sec).",
                window_count as f64 / secs,
                window_bytes as f64 / MB / secs
            ));
            (window_count, window_bytes, window_start) = (0, 0, now);
        }
        let idle_left = idle.saturating_sub(now.saturating_duration_since(last_record));
        if idle_left.is_zero() {
            timed_out = true;
            break;
        }
        let until_report = (window_start + REPORT_INTERVAL).saturating_duration_since(now);
        let wait = idle_left.min(until_report).max(Duration::from_millis(1));
        let records = consumer.poll(wait).await.map_err(|e| e.to_string())?;
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        for r in records.iter().take((args.records - count) as usize) {
            let size =
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            count += 1;
            bytes += size as u64;
            window_count += 1;
            window_bytes += size as u64;
        }
    }
    let end = if timed_out {
        last_record
    } else {
        Instant::now()
    };
    let secs = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    print_line(&format!(
        "{count} records consumed, {:.1} records/sec ({:.2} MB/sec), {:.2} MB in {secs:.3} sec.",
        count as f64 / secs,
        bytes as f64 / MB / secs,
        bytes as f64 / MB
    ));
    if timed_out {
        return Err(format!(
            "no record arrived for {} ms: read {count} of {} record(s)",
            idle.as_millis(),
            args.records
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_use_kafkas_words() {
        let mut w = Window::default();
        w.add(100, Duration::from_millis(2));
        w.add(100, Duration::from_millis(4));
        assert_eq!(
            w.progress_line(Duration::from_secs(1)),
            "2 records sent, 2.0 records/sec (0.00 MB/sec), 3.0 ms avg latency, 4.0 ms max latency."
        );
        let mut samples = vec![Duration::from_millis(4), Duration::from_millis(2)];
        let line = total_line(&w, Duration::from_secs(2), &mut samples);
        assert!(
            line.starts_with("2 records sent, 1.0 records/sec (0.00 MB/sec), 3.00 ms avg latency, 4.00 ms max latency, "),
            "{line}"
        );
        assert!(line.ends_with("ms 99th, 4.00 ms 99.9th."), "{line}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        assert_eq!(percentile(&s, 0.5), Duration::from_micros(501));
        assert_eq!(percentile(&s, 0.999), Duration::from_micros(1000));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
