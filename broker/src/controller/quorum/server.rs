//! The controller listener: accepts peers' connections and answers their RPCs from this node's
//! Raft, one request at a time per connection.
//!
//! Invariants: a frame over `controller.socket.request.max.bytes` or one that does not decode
//! closes that connection only (logged), never the listener or the node; at most
//! `CONNECTIONS_MAX` connections are served, later ones are closed at once; every connection task
//! belongs to the listener task, so aborting it (shutdown) ends them all;
//! - a connection that sends no frame for [`Timeouts::idle`] (a few election timeouts: peers
//!   heartbeat far more often) is closed, and so is one that takes longer than the RPC timeout to
//!   send the rest of a frame it started, or to take its answer: the cap is never held by the
//!   silent. (No TCP keepalive: a dead peer is found by these timeouts.)

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::Raft;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::wire::{self, RemoteError, Request, Response};
use super::{Liveness, QuorumError, TypeConfig};

/// Connections served at once: peers need a few each (the pool keeps at most four per peer).
const CONNECTIONS_MAX: usize = 128;

/// How long a connection may stay silent, and how long one frame may take once it started.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub frame: Duration,
}

/// Serves `listener` until the returned task is aborted.
pub fn spawn(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    liveness: Arc<Liveness>,
    request_bytes_max: usize,
    timeouts: Timeouts,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) if connections.len() >= CONNECTIONS_MAX => {
                        tracing::warn!("controller listener: refusing {peer}: {CONNECTIONS_MAX} connections open");
                        drop(stream);
                    }
                    Ok((stream, peer)) => {
                        let raft = raft.clone();
                        let liveness = Arc::clone(&liveness);
                        connections.spawn(async move {
                            match serve(stream, raft, liveness, request_bytes_max, timeouts).await {
                                Ok(()) => {}
                                // A pooled connection the peer stopped using: routine.
                                Err(e @ wire::FrameError::Idle(_)) => {
                                    tracing::debug!("controller connection from {peer} closed: {e}");
                                }
                                Err(e) => {
                                    tracing::warn!("controller connection from {peer} closed: {e}");
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: the peers retry; try again shortly.
                        tracing::warn!("controller listener: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

async fn serve(
    mut stream: TcpStream,
    raft: Raft<TypeConfig>,
    liveness: Arc<Liveness>,
    request_bytes_max: usize,
    timeouts: Timeouts,
) -> Result<(), wire::FrameError> {
    stream.set_nodelay(true)?;
    let Timeouts { idle, frame } = timeouts;
    while let Some(request) =
        wire::read_frame_bounded::<Request>(&mut stream, request_bytes_max, idle, frame).await?
    {
        let response = answer(&raft, &liveness, request).await;
        tokio::time::timeout(
            frame,
            wire::write_frame(&mut stream, &response, request_bytes_max),
        )
        .await
        .map_err(|_| wire::FrameError::Stalled(frame))??;
    }
    Ok(())
}

fn failed<E: std::fmt::Display>(e: RaftError<u64, E>) -> RemoteError {
    RemoteError::Failed(e.to_string())
}

fn snapshot_failed(e: RaftError<u64, InstallSnapshotError>) -> RemoteError {
    match e {
        // Typed: the sender must restart the transfer, not just back off.
        RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)) => {
            RemoteError::SnapshotMismatch(m)
        }
        other => failed(other),
    }
}

async fn answer(raft: &Raft<TypeConfig>, liveness: &Liveness, request: Request) -> Response {
    match request {
        Request::AppendEntries(rpc) => {
            Response::AppendEntries(raft.append_entries(rpc).await.map_err(failed))
        }
        Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await.map_err(failed)),
        Request::InstallSnapshot(rpc) => {
            Response::InstallSnapshot(raft.install_snapshot(rpc).await.map_err(snapshot_failed))
        }
        // Only the leader keeps heartbeats (it alone fences); others point to it.
        Request::BrokerHeartbeat(hb) => {
            let metrics = raft.metrics().borrow().clone();
            Response::BrokerHeartbeat(if metrics.current_leader == Some(metrics.id) {
                liveness.heard(hb);
                Ok(())
            } else {
                Err(RemoteError::NotLeader {
                    leader: metrics.current_leader,
                })
            })
        }
        // Never forwarded again: a node that is not the leader says so, with its hint.
        Request::Propose(batch) => Response::Propose(
            super::propose_local(raft, batch)
                .await
                .map_err(|e| match e {
                    QuorumError::NotLeader { leader } => RemoteError::NotLeader { leader },
                    QuorumError::Rejected { index, reason } => {
                        RemoteError::Rejected { index, reason }
                    }
                    other => RemoteError::Failed(other.to_string()),
                }),
        ),
    }
}
