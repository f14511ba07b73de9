//! commit-load: drives OffsetCommit requests (v8) at a broker as fast as it answers them, over a
//! few connections with several requests in flight on each (as a busy consumer fleet would), and
//! reports requests/s and the error count.
//!
//! usage: commit-load HOST:PORT TOPIC [connections=8] [requests=100000] [in_flight=32]
//!        [groups_per_connection=1000] [partitions=8]
//! Request i of connection c commits offset i of partition i % partitions for group
//! "load-c-(i % groups)", generation -1 (a simple commit). Every loop is bounded by `requests`.

use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VERSION: i16 = 8;

struct Args {
    addr: String,
    topic: String,
    connections: usize,
    requests: usize,
    in_flight: usize,
    groups: usize,
    partitions: i32,
}

fn frame(c: usize, i: usize, a: &Args) -> Result<BytesMut, String> {
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::OffsetCommit as i16;
    header.request_api_version = VERSION;
    header.correlation_id = i as i32;
    header.client_id = Some(StrBytes::from_static_str("commit-load"));
    let partition = OffsetCommitRequestPartition::default()
        .with_partition_index((i % a.partitions as usize) as i32)
        .with_committed_offset(i as i64);
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(format!(
            "load-{c}-{}",
            i % a.groups
        ))))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(a.topic.clone())))
            .with_partitions(vec![partition])]);
    let mut body = BytesMut::new();
    header.encode(&mut body, 2).map_err(|e| e.to_string())?;
    request
        .encode(&mut body, VERSION)
        .map_err(|e| e.to_string())?;
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Runs one connection's share; returns the number of partition errors seen.
async fn connection(c: usize, a: &Args) -> Result<usize, String> {
    let stream = TcpStream::connect(&a.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", a.addr))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = stream.into_split();
    let (mut sent, mut received, mut errors) = (0usize, 0usize, 0usize);
    let mut buf = BytesMut::with_capacity(64 << 10);
    while received < a.requests {
        // Top up the pipeline in one write.
        let mut out = BytesMut::new();
        while sent < a.requests && sent - received < a.in_flight {
            out.extend_from_slice(&frame(c, sent, a)?);
            sent += 1;
        }
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        // Read at least one whole response.
        loop {
            if buf.len() >= 4 {
                let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() >= 4 + size {
                    let mut body = buf.split_to(4 + size).freeze();
                    body.advance(4);
                    let _correlation_id = body.get_i32();
                    let _tagged_fields = body.get_u8();
                    let resp = OffsetCommitResponse::decode(&mut body, VERSION)
                        .map_err(|e| e.to_string())?;
                    errors += resp
                        .topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .filter(|p| p.error_code != 0)
                        .count();
                    received += 1;
                    break;
                }
            }
            if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed by the broker".into());
            }
        }
    }
    Ok(errors)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: commit-load HOST:PORT TOPIC [connections] [requests] [in_flight] [groups] [partitions]");
        std::process::exit(2);
    }
    let a = std::sync::Arc::new(Args {
        addr: args[1].clone(),
        topic: args[2].clone(),
        connections: arg(&args, 3, 8),
        requests: arg(&args, 4, 100_000),
        in_flight: arg(&args, 5, 32).max(1),
        groups: arg(&args, 6, 1_000).max(1),
        partitions: arg(&args, 7, 8).max(1),
    });
    let per_connection = a.requests / a.connections.max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.connections)
        .map(|c| {
            let a = std::sync::Arc::clone(&a);
            tokio::spawn(async move {
                let mine = Args {
                    addr: a.addr.clone(),
                    topic: a.topic.clone(),
                    requests: per_connection,
                    ..*a
                };
                connection(c, &mine).await
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(e)) => errors += e,
            Ok(Err(e)) => {
                eprintln!("commit-load: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("commit-load: task failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let total = per_connection * a.connections;
    println!(
        "requests={total} seconds={secs:.3} requests_per_s={:.0} errors={errors} connections={} in_flight={}",
        total as f64 / secs,
        a.connections,
        a.in_flight
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
