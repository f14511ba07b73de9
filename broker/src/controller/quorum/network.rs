//! The client side of the controller RPC: openraft's network (one client per peer) and the
//! forwarding of proposals to the leader, over connections pooled per peer address.
//!
//! Invariants: every call is bounded (openraft's per-RPC deadline, or
//! `controller.quorum.rpc.timeout.ms`); a connection that failed or timed out is dropped, never
//! pooled again (its stream may be out of step); only connections that answered go back to the
//! pool, at most `IDLE_PER_PEER` per peer, and one idle for longer than the election timeout is
//! not reused (the listener closes connections idle for a few of them);
//! - a request is retried on a fresh connection only if the pooled one failed before the whole
//!   request was written, or the request is idempotent (Raft's own RPCs): a forwarded proposal that
//!   may have reached the leader is never sent twice;
//! - an AppendEntries that does not fit a frame is openraft's `PayloadTooLarge` with a hint of half
//!   its entries (openraft splits it), never "unreachable" (which would resend it as it is).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use tokio::net::TcpStream;

use super::settings::QuorumSettings;
use super::wire::{self, RemoteError, Request, Response};
use super::{QuorumError, TypeConfig};

const IDLE_PER_PEER: usize = 4;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Frame(#[from] wire::FrameError),
    #[error("connection closed before the answer")]
    Closed,
    #[error("unexpected answer to {0}")]
    Mismatch(&'static str),
    #[error("remote: {0:?}")]
    Remote(RemoteError),
    #[error("request of {len} bytes is over the frame limit of {max}")]
    RequestTooLarge { len: usize, max: usize },
}

/// A failed attempt, and whether the whole request may have reached the peer.
struct Failed {
    written: bool,
    error: CallError,
}

impl From<CallError> for Failed {
    fn from(error: CallError) -> Failed {
        Failed {
            written: false,
            error,
        }
    }
}

impl From<wire::FrameError> for Failed {
    fn from(e: wire::FrameError) -> Failed {
        CallError::from(e).into()
    }
}

/// Idle connections by peer address, shared by every client of this node.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
    rpc_timeout: Duration,
    request_bytes_max: usize,
    backoff: Duration,
    /// A pooled connection idle longer than this is dropped rather than used.
    reuse_within: Duration,
}

impl Pool {
    pub fn new(settings: &QuorumSettings) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            rpc_timeout: Duration::from_millis(settings.rpc_timeout_ms),
            request_bytes_max: settings.request_bytes_max,
            backoff: Duration::from_millis(settings.heartbeat_interval_ms * 2),
            reuse_within: Duration::from_millis(settings.election_timeout_ms),
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.get_mut(&addr)?;
        // The most recently used is last; older ones the listener may be about to close.
        conns.retain(|(_, since)| since.elapsed() < self.reuse_within);
        conns.pop().map(|(stream, _)| stream)
    }

    fn put(&self, addr: SocketAddr, stream: TcpStream) {
        if let Ok(mut idle) = self.idle.lock() {
            let conns = idle.entry(addr).or_default();
            if conns.len() < IDLE_PER_PEER {
                conns.push((stream, Instant::now()));
            }
        }
    }

    /// Drops every idle connection.
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Sends `request` to `addr` and reads the answer within `timeout`. A pooled connection that
    /// fails is replaced once by a fresh one (the peer may have restarted since it was pooled).
    pub async fn call(
        &self,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let max = self.request_bytes_max;
        let attempt = |stream: Option<TcpStream>| async move {
            let mut stream = match stream {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(addr)
                        .await
                        .map_err(wire::FrameError::Io)?;
                    s.set_nodelay(true).map_err(wire::FrameError::Io)?;
                    s
                }
            };
            match wire::write_frame(&mut stream, request, max).await {
                Ok(()) => {}
                // Nothing was written: the connection is still good.
                Err(wire::FrameError::TooLarge { len, max }) => {
                    self.put(addr, stream);
                    return Err(CallError::RequestTooLarge { len, max }.into());
                }
                Err(e) => return Err(e.into()),
            }
            let written = |error: CallError| Failed {
                written: true,
                error,
            };
            match wire::read_frame(&mut stream, max).await {
                Ok(Some(response)) => Ok((stream, response)),
                Ok(None) => Err(written(CallError::Closed)),
                Err(e) => Err(written(e.into())),
            }
        };
        // Raft's RPCs may be delivered twice; a proposal may not.
        let idempotent = !matches!(request, Request::Propose(_));
        let bounded = async {
            if let Some(pooled) = self.take(addr) {
                match attempt(Some(pooled)).await {
                    Ok(done) => return Ok(done),
                    Err(f) if matches!(f.error, CallError::RequestTooLarge { .. }) => {
                        return Err(f.error)
                    }
                    Err(f) if f.written && !idempotent => return Err(f.error),
                    Err(_) => {}
                }
            }
            attempt(None).await.map_err(|f| f.error)
        };
        match tokio::time::timeout(timeout, bounded).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok((stream, response))) => {
                self.put(addr, stream);
                Ok(response)
            }
        }
    }

    /// Forwards a proposal to the leader `node` at `addr`.
    pub async fn propose(
        &self,
        node: u64,
        addr: SocketAddr,
        batch: Vec<u8>,
        timeout: Duration,
    ) -> Result<u64, QuorumError> {
        let unreachable = |reason: String| QuorumError::Unreachable { node, reason };
        match self.call(addr, &Request::Propose(batch), timeout).await {
            Ok(Response::Propose(Ok(index))) => Ok(index),
            Ok(Response::Propose(Err(RemoteError::NotLeader { leader }))) => {
                Err(QuorumError::NotLeader { leader })
            }
            Ok(Response::Propose(Err(RemoteError::Rejected { index, reason }))) => {
                Err(QuorumError::Rejected { index, reason })
            }
            Ok(Response::Propose(Err(RemoteError::Failed(why)))) => Err(QuorumError::Refused(why)),
            Ok(_) => Err(unreachable("unexpected answer to a proposal".into())),
            Err(CallError::RequestTooLarge { len, max }) => Err(QuorumError::TooLarge { len, max }),
            Err(CallError::Timeout(t)) => Err(QuorumError::Timeout(t)),
            Err(e) => Err(unreachable(e.to_string())),
        }
    }
}

impl Pool {
    /// Sends a broker heartbeat to `node` (the leader, as this node believes).
    pub async fn heartbeat(
        &self,
        node: u64,
        addr: SocketAddr,
        heartbeat: wire::BrokerHeartbeat,
        timeout: Duration,
    ) -> Result<(), QuorumError> {
        let unreachable = |reason: String| QuorumError::Unreachable { node, reason };
        match self
            .call(addr, &Request::BrokerHeartbeat(heartbeat), timeout)
            .await
        {
            Ok(Response::BrokerHeartbeat(Ok(()))) => Ok(()),
            Ok(Response::BrokerHeartbeat(Err(RemoteError::NotLeader { leader }))) => {
                Err(QuorumError::NotLeader { leader })
            }
            Ok(Response::BrokerHeartbeat(Err(e))) => Err(QuorumError::Refused(format!("{e:?}"))),
            Ok(_) => Err(unreachable("unexpected answer to a heartbeat".into())),
            Err(CallError::Timeout(t)) => Err(QuorumError::Timeout(t)),
            Err(e) => Err(unreachable(e.to_string())),
        }
    }
}

/// Makes openraft's per-peer clients.
pub struct Factory {
    pool: std::sync::Arc<Pool>,
}

impl Factory {
    pub fn new(pool: std::sync::Arc<Pool>) -> Factory {
        Factory { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Client;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Client {
        Client {
            target,
            addr: node.addr.parse().map_err(|e| format!("{}: {e}", node.addr)),
            pool: self.pool.clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct Client {
    target: u64,
    /// The peer's address, or why its membership entry has none usable.
    addr: Result<SocketAddr, String>,
    pool: std::sync::Arc<Pool>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Client {
    async fn call<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> RpcResult<Response, E> {
        let addr = self
            .addr
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let timeout = option
            .hard_ttl()
            .min(self.pool.rpc_timeout.max(option.soft_ttl()));
        let entries = match &request {
            Request::AppendEntries(rpc) => Some(rpc.entries.len() as u64),
            _ => None,
        };
        match self.pool.call(addr, &request, timeout).await {
            Ok(response) => Ok(response),
            // openraft retries at once with half the entries. One entry fits (a proposal over
            // the frame limit less headroom is refused); if one did not, backing off is all
            // there is to do, rather than retrying at once forever.
            Err(e @ CallError::RequestTooLarge { .. }) => match entries {
                Some(n) if n > 1 => Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(n / 2).with_source_error(&e),
                )),
                _ => Err(RPCError::Unreachable(Unreachable::new(&e))),
            },
            Err(e @ CallError::Frame(_)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RemoteError,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        // The peer is up but cannot serve (it stopped): openraft backs off and retries, which is
        // what a remote failure here needs.
        RPCError::Unreachable(Unreachable::new(&CallError::Remote(e)))
    }
}

/// An InstallSnapshot failure as openraft must see it: a chunk out of order as the remote's
/// `SnapshotMismatch` (openraft restarts the transfer), anything else as [`Client::remote`].
fn snapshot_remote(
    client: &Client,
    e: RemoteError,
) -> RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>> {
    match e {
        RemoteError::SnapshotMismatch(m) => {
            RPCError::RemoteError(openraft::error::RemoteError::new(
                client.target,
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)),
            ))
        }
        other => client.remote(other),
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self.call(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(Ok(r)) => Ok(r),
            Response::AppendEntries(Err(e)) => Err(self.remote(e)),
            _ => Err(RPCError::Network(NetworkError::new(&CallError::Mismatch(
                "append",
            )))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self.call(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(Ok(r)) => Ok(r),
            Response::InstallSnapshot(Err(e)) => Err(snapshot_remote(self, e)),
            _ => Err(RPCError::Network(NetworkError::new(&CallError::Mismatch(
                "snapshot",
            )))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(Ok(r)) => Ok(r),
            Response::Vote(Err(e)) => Err(self.remote(e)),
            _ => Err(RPCError::Network(NetworkError::new(&CallError::Mismatch(
                "vote",
            )))),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.pool.backoff))
    }
}

impl super::Quorum {
    /// The controller address of `node` in the current membership.
    pub(super) fn node_addr(&self, node: u64) -> Option<SocketAddr> {
        let metrics = self.shared.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&node)
            .and_then(|n| n.addr.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that answers the first proposal on its first connection, then reads every later
    /// request and closes without answering (as if it died after committing). Counts requests.
    async fn peer_that_dies_after_reading(
        seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut first = true;
            // Bounded: the test makes at most three connections.
            for _ in 0..3 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                while let Ok(Some(_)) = wire::read_frame::<Request>(&mut stream, 1 << 20).await {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if !std::mem::replace(&mut first, false) {
                        break;
                    }
                    let answer = Response::Propose(Ok(1));
                    wire::write_frame(&mut stream, &answer, 1 << 20)
                        .await
                        .unwrap();
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_forwarded_proposal_is_not_sent_again_once_written() {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let addr = peer_that_dies_after_reading(seen.clone()).await;
        let pool = Pool::new(&QuorumSettings::new(1, Vec::new(), addr));
        let timeout = Duration::from_secs(5);
        // The first answers and leaves its connection pooled.
        assert_eq!(pool.propose(2, addr, b"one".to_vec(), timeout).await, Ok(1));
        // The second reaches the peer on the pooled connection, which then closes: the outcome is
        // unknown, so it is an error and the batch is not sent on a fresh connection.
        let second = pool.propose(2, addr, b"two".to_vec(), timeout).await;
        assert!(
            matches!(second, Err(QuorumError::Unreachable { .. })),
            "{second:?}"
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_snapshot_mismatch_reaches_openraft_as_the_remote_error_it_is() {
        let client = Client {
            target: 2,
            addr: Err("unused".into()),
            pool: std::sync::Arc::new(Pool::new(&QuorumSettings::new(
                1,
                Vec::new(),
                "127.0.0.1:1".parse().unwrap(),
            ))),
        };
        let mismatch = openraft::error::SnapshotMismatch {
            expect: openraft::SnapshotSegmentId {
                id: "s".into(),
                offset: 0,
            },
            got: openraft::SnapshotSegmentId {
                id: "s".into(),
                offset: 10,
            },
        };
        match snapshot_remote(&client, RemoteError::SnapshotMismatch(mismatch.clone())) {
            RPCError::RemoteError(r) => {
                assert_eq!(r.target, 2);
                assert!(matches!(
                    r.source,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)) if m == mismatch
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            snapshot_remote(&client, RemoteError::Failed("stopped".into())),
            RPCError::Unreachable(_)
        ));
    }
}
