//! `strata produce TOPIC`: reads stdin line by line and produces each line as one record
//! (optionally split into key and value at the first `--key-separator`), with the same
//! `--header`s on every record. Flushes at end of input; succeeds only if every record was
//! acknowledged, otherwise fails with one line naming how many failed and the first error.

use super::{parse_acks, parse_compression};
use std::io::BufRead;

use bytes::Bytes;
use clap::Args;
use strata_client::producer::{ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connection: super::ConnectionArgs,
    /// Topic to produce to (auto-created if the broker allows it).
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    /// Split each line at the first SEP into key and value (a line without SEP has no key).
    #[arg(short = 'K', long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header added to every record, KEY=VALUE; repeatable.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Acknowledgements to wait for: 0, 1, all (or -1).
    #[arg(
        long,
        default_value = "all",
        allow_hyphen_values = true,
        value_name = "ACKS"
    )]
    pub acks: String,
    /// Compression codec: none, gzip, snappy, lz4, zstd.
    #[arg(short = 'z', long, default_value = "none", value_name = "CODEC")]
    pub compression: String,
    /// Produce every record to this partition (default: by key, or sticky when keyless).
    #[arg(short = 'p', long, value_name = "P")]
    pub partition: Option<i32>,
    /// How long a batch waits for more records (`linger.ms`).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// Batch size in bytes (`batch.size`).
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub batch_size: usize,
}

fn parse_headers(headers: &[String]) -> Result<Vec<(String, Bytes)>, String> {
    headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Bytes::from(v.to_string()))),
            _ => Err(format!("invalid --header '{h}': expected KEY=VALUE")),
        })
        .collect()
}

/// Splits `line` at the first `sep` into (key, value); no separator: no key.
fn split_line(line: Bytes, sep: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let Some(sep) = sep.filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (Some(line.slice(..i)), line.slice(i + sep.len()..)),
        None => (None, line),
    }
}

/// Reads stdin on a plain thread (the runtime has no stdin support) and hands over lines
/// without their trailing newline; a bounded channel keeps memory bounded.
fn spawn_stdin_reader() -> mpsc::Receiver<Result<Bytes, String>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.blocking_send(Ok(Bytes::from(line))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(format!("cannot read stdin: {e}")));
                    break;
                }
            }
        }
    });
    rx
}

pub async fn run(args: ProduceArgs) -> Result<(), String> {
    let acks = parse_acks(&args.acks)?;
    let compression = parse_compression(&args.compression)?;
    let headers = parse_headers(&args.headers)?;
    if let Some(p) = args.partition {
        if p < 0 {
            return Err(format!("invalid --partition {p}: must be >= 0"));
        }
    }
    let producer = super::connect_producer(
        &args.connection,
        ProducerConfig {
            acks,
            linger_ms: args.linger_ms,
            batch_size: args.batch_size.max(1),
            compression,
            ..ProducerConfig::default()
        },
    )
    .await?;

    // Answers are awaited in order by a separate task, so reading never waits for them.
    let (futures_tx, mut futures_rx) = mpsc::channel(64 * 1024);
    let collector = tokio::spawn(async move {
        let (mut acked, mut failed, mut first_error) = (0u64, 0u64, None);
        while let Some(delivery) = futures_rx.recv().await {
            let delivery: strata_client::producer::DeliveryFuture = delivery;
            match delivery.await {
                Ok(_) => acked += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        (acked, failed, first_error)
    });

    let mut lines = spawn_stdin_reader();
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut read_error = None;
    let mut send_error = None;
    while let Some(line) = lines.recv().await {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        let (key, value) = split_line(line, separator);
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp: None,
        };
        match producer.send(record).await {
            Ok(delivery) => {
                if futures_tx.send(delivery).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                send_error = Some(e.to_string());
                break;
            }
        }
    }
    producer.flush().await;
    drop(futures_tx);
    let (acked, failed, first_error) = collector
        .await
        .map_err(|e| format!("internal error waiting for acknowledgements: {e}"))?;
    if let Some(e) = send_error {
        return Err(format!(
            "{e} ({acked} record(s) acknowledged before it, {failed} failed)"
        ));
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {} record(s) failed; first error: {}",
            acked + failed,
            first_error.unwrap_or_default()
        ));
    }
    if let Some(e) = read_error {
        return Err(format!("{e} ({acked} record(s) acknowledged before it)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_client::producer::Acks;

    #[test]
    fn lines_split_at_the_first_separator() {
        let sep = Some(&b"::"[..]);
        assert_eq!(
            split_line(Bytes::from_static(b"k::v::w"), sep),
            (Some(Bytes::from_static(b"k")), Bytes::from_static(b"v::w"))
        );
        assert_eq!(
            split_line(Bytes::from_static(b"novalue"), sep),
            (None, Bytes::from_static(b"novalue"))
        );
        assert_eq!(
            split_line(Bytes::from_static(b"::v"), sep),
            (Some(Bytes::new()), Bytes::from_static(b"v"))
        );
        assert_eq!(
            split_line(Bytes::from_static(b"a:b"), None),
            (None, Bytes::from_static(b"a:b"))
        );
    }

    #[test]
    fn flags_are_parsed_or_refused_naming_the_value() {
        assert_eq!(parse_acks("-1"), Ok(Acks::All));
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("0"), Ok(Acks::None));
        assert!(parse_acks("2").unwrap_err().contains("'2'"));
        assert!(parse_compression("brotli").unwrap_err().contains("brotli"));
        assert_eq!(
            parse_headers(&["a=b=c".into()]).unwrap(),
            vec![("a".to_string(), Bytes::from_static(b"b=c"))]
        );
        assert!(parse_headers(&["nokv".into()]).is_err());
    }
}
