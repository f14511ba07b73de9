//! One connection to one broker: requests are pipelined (many in flight), responses are matched
//! to requests by order and correlation id, and the API version of each request is the highest
//! that both this client and the broker support (learned with ApiVersions on connect).
//!
//! Invariants:
//! - responses arrive in request order (a Kafka guarantee); a response whose correlation id is
//!   not the oldest pending one means the stream is corrupt, and the connection is closed;
//! - when the connection fails, every pending request fails with `ConnectionLost`, never hangs;
//! - a request that times out closes the connection (as Kafka clients do): the broker may never
//!   answer on it again, so it is replaced on next use rather than reused;
//! - no response bytes are trusted: decoding errors are `Malformed`, never panics.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use strata_protocol::client_codec::{decode_response, encode_request};
use strata_protocol::frame::FrameCodec;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::error::{ClientError, Result};

/// Largest response frame accepted (a fetch answer is bounded by `fetch.max.bytes`).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Requests queued for the writer before `send` waits.
const OUTGOING_QUEUE_MAX: usize = 1024;

/// The highest version of each API this client implements. The broker's range caps it further.
pub fn client_max_version(key: ApiKey) -> Option<i16> {
    Some(match key {
        ApiKey::Produce => 9,
        ApiKey::Fetch => 12,
        ApiKey::ListOffsets => 7,
        ApiKey::Metadata => 12,
        ApiKey::ApiVersions => 3,
        ApiKey::CreateTopics => 7,
        ApiKey::DeleteTopics => 6,
        ApiKey::CreatePartitions => 3,
        ApiKey::DescribeConfigs => 4,
        ApiKey::DescribeCluster => 2,
        ApiKey::DescribeQuorum => 1,
        ApiKey::InitProducerId => 4,
        ApiKey::FindCoordinator => 4,
        ApiKey::JoinGroup => 9,
        ApiKey::SyncGroup => 5,
        ApiKey::Heartbeat => 4,
        ApiKey::LeaveGroup => 5,
        ApiKey::OffsetCommit => 8,
        ApiKey::OffsetFetch => 8,
        ApiKey::OffsetDelete => 0,
        ApiKey::ListGroups => 5,
        ApiKey::DescribeGroups => 5,
        ApiKey::DeleteGroups => 2,
        ApiKey::DescribeLogDirs => 4,
        _ => return None,
    })
}

type Reply = oneshot::Sender<Result<Bytes>>;

struct Outgoing {
    frame: Bytes,
    reply: Option<(i32, Reply)>,
}

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "strata-client".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Connection {
    addr: String,
    config: ConnectionConfig,
    /// `config.client_id` as every request header carries it (shared, not copied per request).
    client_id: StrBytes,
    outgoing: mpsc::Sender<Outgoing>,
    next_correlation_id: AtomicI32,
    /// The broker's (min, max) version per API key.
    broker_versions: HashMap<i16, (i16, i16)>,
    closed: Arc<AtomicBool>,
    /// Requests awaiting a response, shared with the reader (failed when a request times out).
    pending: Arc<Mutex<VecDeque<(i32, Reply)>>>,
    /// The reader task, stopped when a request times out.
    reader: tokio::task::AbortHandle,
}

impl Connection {
    /// Connects to `addr` (HOST:PORT) and learns the broker's API versions.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                connect_err(format!(
                    "no answer within {} ms",
                    config.connect_timeout.as_millis()
                ))
            })?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE_MAX);
        let pending: Arc<Mutex<VecDeque<(i32, Reply)>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_loop(
            write_half,
            rx,
            Arc::clone(&pending),
            Arc::clone(&closed),
            addr.to_string(),
        ));
        let reader = tokio::spawn(read_loop(
            read_half,
            Arc::clone(&pending),
            Arc::clone(&closed),
            addr.to_string(),
        ))
        .abort_handle();
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            config,
            outgoing: tx,
            next_correlation_id: AtomicI32::new(1),
            broker_versions: HashMap::new(),
            closed,
            pending,
            reader,
        };
        conn.broker_versions = conn.negotiate_versions().await?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// ApiVersions v3, falling back to v0 if the broker answers UNSUPPORTED_VERSION (KIP-511).
    async fn negotiate_versions(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strata-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = self.send_at(&request, 3).await?;
        if response.error_code == kafka_protocol::ResponseError::UnsupportedVersion.code() {
            response = self.send_at(&request, 0).await?;
        }
        if let Some(e) = ClientError::from_code(
            response.error_code,
            format!("ApiVersions from {}", self.addr),
        ) {
            return Err(e);
        }
        Ok(response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// The version this connection uses for `key`, if both sides speak one.
    pub fn version_for(
        &self,
        key: ApiKey,
        known: kafka_protocol::protocol::VersionRange,
    ) -> Option<i16> {
        let (broker_min, broker_max) = *self.broker_versions.get(&(key as i16))?;
        let max = client_max_version(key)?.min(broker_max).min(known.max);
        (max >= broker_min.max(known.min)).then_some(max)
    }

    /// Sends a request at the best common version and waits for its response.
    pub async fn send<R>(&self, request: &R) -> Result<(R::Response, i16)>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        let key = api_key::<R>()?;
        let version = self
            .version_for(key, R::VERSIONS)
            .ok_or(ClientError::Unsupported { api: api_name(key) })?;
        Ok((self.send_at(request, version).await?, version))
    }

    /// Sends a request expecting no response (Produce with acks=0).
    pub async fn send_no_response<R: Request>(&self, request: &R) -> Result<i16> {
        let key = api_key::<R>()?;
        let version = self
            .version_for(key, R::VERSIONS)
            .ok_or(ClientError::Unsupported { api: api_name(key) })?;
        let (frame, _) = self.encode(request, version)?;
        self.outgoing
            .send(Outgoing { frame, reply: None })
            .await
            .map_err(|_| self.lost("connection closed"))?;
        Ok(version)
    }

    /// Sends at an explicit version.
    pub async fn send_at<R>(&self, request: &R, version: i16) -> Result<R::Response>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        let reply = self.enqueue(request, version).await?;
        self.response::<R>(reply, version).await
    }

    /// Queues a request at the best common version and returns a future of its response.
    /// Requests are written in the order `pipeline` returns, so a caller that must keep an
    /// order (a producer's batches of one partition) awaits `pipeline` for each request in
    /// turn and the responses concurrently. The future owns the connection (`Arc`).
    pub async fn pipeline<R>(
        self: &Arc<Self>,
        request: &R,
    ) -> Result<impl Future<Output = Result<R::Response>> + Send + 'static>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion + Send,
    {
        let key = api_key::<R>()?;
        let version = self
            .version_for(key, R::VERSIONS)
            .ok_or(ClientError::Unsupported { api: api_name(key) })?;
        let reply = self.enqueue(request, version).await?;
        let conn = Arc::clone(self);
        Ok(async move { conn.response::<R>(reply, version).await })
    }

    /// Encodes `request` and hands it to the writer; the receiver gets its response frame.
    async fn enqueue<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<oneshot::Receiver<Result<Bytes>>> {
        let (frame, correlation_id) = self.encode(request, version)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.outgoing
            .send(Outgoing {
                frame,
                reply: Some((correlation_id, reply_tx)),
            })
            .await
            .map_err(|_| self.lost("connection closed"))?;
        Ok(reply_rx)
    }

    /// Waits (at most the request timeout) for a queued request's response and decodes it.
    async fn response<R>(
        &self,
        reply_rx: oneshot::Receiver<Result<Bytes>>,
        version: i16,
    ) -> Result<R::Response>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        let key = api_key::<R>()?;
        let timeout = self.config.request_timeout;
        let body = tokio::time::timeout(timeout, reply_rx)
            .await
            .map_err(|_| {
                // The broker may never answer on this connection again, and later responses
                // would queue behind this one: close it so the next request reconnects.
                self.close("request timed out");
                ClientError::Timeout {
                    api: api_name(key),
                    timeout_ms: timeout.as_millis() as u64,
                }
            })?
            .map_err(|_| self.lost("connection closed"))??;
        // The reader matched the correlation id; the header and body are decoded here.
        let (_, response) =
            decode_response::<R::Response>(version, body).map_err(|e| ClientError::Malformed {
                api: api_name(key),
                reason: e.to_string(),
            })?;
        Ok(response)
    }

    fn encode<R: Request>(&self, request: &R, version: i16) -> Result<(Bytes, i32)> {
        let key = api_key::<R>()?;
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(R::KEY, version, correlation_id, &self.client_id, request)
            .map_err(|e| {
                ClientError::Invalid(format!(
                    "cannot encode {} v{version}: {}",
                    api_name(key),
                    e.0
                ))
            })?;
        Ok((frame, correlation_id))
    }

    /// Marks the connection closed, stops its reader and fails every pending request
    /// (`ConnectionLost` with `reason`). A closed connection is replaced on next use.
    pub fn close(&self, reason: &str) {
        self.closed.store(true, Ordering::Release);
        self.reader.abort();
        fail_all(&self.pending, &self.addr, reason);
    }

    fn lost(&self, reason: &str) -> ClientError {
        ClientError::ConnectionLost {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Nobody can send on it any more (the writer ends with the last sender): stop reading,
        // so a connection abandoned mid-handshake or after a timeout releases its socket.
        self.reader.abort();
    }
}

fn api_key<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Invalid(format!("unknown API key {}", R::KEY)))
}

pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::DescribeQuorum => "DescribeQuorum",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        _ => "request",
    }
}

async fn write_loop(
    write_half: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    pending: Arc<Mutex<VecDeque<(i32, Reply)>>>,
    closed: Arc<AtomicBool>,
    addr: String,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some(o) = rx.recv().await {
        if closed.load(Ordering::Acquire) {
            if let Some((_, reply)) = o.reply {
                let _ = reply.send(Err(ClientError::ConnectionLost {
                    addr: addr.clone(),
                    reason: "closed".into(),
                }));
            }
            continue;
        }
        // Registered before the bytes go out, so the reader always finds it.
        if let Some(r) = o.reply {
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(r);
        }
        let ok =
            out.write_all(&o.frame).await.is_ok() && (!rx.is_empty() || out.flush().await.is_ok());
        if !ok {
            closed.store(true, Ordering::Release);
            fail_all(&pending, &addr, "write failed");
        }
    }
    let _ = out.shutdown().await;
}

async fn read_loop(
    read_half: tokio::net::tcp::OwnedReadHalf,
    pending: Arc<Mutex<VecDeque<(i32, Reply)>>>,
    closed: Arc<AtomicBool>,
    addr: String,
) {
    let mut frames = FramedRead::new(read_half, FrameCodec::new(RESPONSE_BYTES_MAX));
    let reason = loop {
        let frame = match frames.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => break e.to_string(),
            None => break "closed by the broker".to_string(),
        };
        // Peeked, not taken: the response header is decoded with the body.
        let Some(&prefix) = frame.first_chunk::<4>() else {
            break "response shorter than a correlation id".to_string();
        };
        let correlation_id = i32::from_be_bytes(prefix);
        let next = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        match next {
            Some((expected, reply)) if expected == correlation_id => {
                let _ = reply.send(Ok(frame));
            }
            Some((expected, reply)) => {
                let _ = reply.send(Err(ClientError::ConnectionLost {
                    addr: addr.clone(),
                    reason: format!(
                        "response for correlation id {correlation_id}, expected {expected}"
                    ),
                }));
                break "responses out of order".to_string();
            }
            None => break format!("unexpected response with correlation id {correlation_id}"),
        }
    };
    closed.store(true, Ordering::Release);
    fail_all(&pending, &addr, &reason);
}

fn fail_all(pending: &Mutex<VecDeque<(i32, Reply)>>, addr: &str, reason: &str) {
    let drained: Vec<_> = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for (_, reply) in drained {
        let _ = reply.send(Err(ClientError::ConnectionLost {
            addr: addr.to_string(),
            reason: reason.to_string(),
        }));
    }
}
