//! The client side of the controller RPC: openraft's network (one client per peer) and the
//! forwarding of proposals to the leader, over connections pooled per peer address.
//!
//! Invariants: every call is bounded (openraft's per-RPC deadline, or
//! `controller.quorum.rpc.timeout.ms`); a connection that failed or timed out is dropped, never
//! pooled again (its stream may be out of step); only connections that answered go back to the
//! pool, at most `IDLE_PER_PEER` per peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
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
}

/// Idle connections by peer address, shared by every client of this node.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
    rpc_timeout: Duration,
    request_bytes_max: usize,
    backoff: Duration,
}

impl Pool {
    pub fn new(settings: &QuorumSettings) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            rpc_timeout: Duration::from_millis(settings.rpc_timeout_ms),
            request_bytes_max: settings.request_bytes_max,
            backoff: Duration::from_millis(settings.heartbeat_interval_ms * 2),
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        self.idle.lock().ok()?.get_mut(&addr)?.pop()
    }

    fn put(&self, addr: SocketAddr, stream: TcpStream) {
        if let Ok(mut idle) = self.idle.lock() {
            let conns = idle.entry(addr).or_default();
            if conns.len() < IDLE_PER_PEER {
                conns.push(stream);
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
            wire::write_frame(&mut stream, request, self.request_bytes_max).await?;
            match wire::read_frame(&mut stream, self.request_bytes_max).await? {
                Some(response) => Ok((stream, response)),
                None => Err(CallError::Closed),
            }
        };
        let bounded = async {
            if let Some(pooled) = self.take(addr) {
                if let Ok(done) = attempt(Some(pooled)).await {
                    return Ok(done);
                }
            }
            attempt(None).await
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
            Ok(Response::Propose(Err(RemoteError::Failed(why)))) => Err(QuorumError::Refused(why)),
            Ok(_) => Err(unreachable("unexpected answer to a proposal".into())),
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

    async fn new_client(&mut self, _target: u64, node: &BasicNode) -> Client {
        Client {
            addr: node.addr.parse().map_err(|e| format!("{}: {e}", node.addr)),
            pool: self.pool.clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct Client {
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
        match self.pool.call(addr, &request, timeout).await {
            Ok(response) => Ok(response),
            Err(e @ CallError::Frame(_)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RemoteError,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        // The peer is up but cannot serve (it stopped, or a snapshot chunk came out of order):
        // openraft backs off and retries, which is what a remote failure here needs.
        RPCError::Unreachable(Unreachable::new(&CallError::Remote(e)))
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
            Response::InstallSnapshot(Err(e)) => Err(self.remote(e)),
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
