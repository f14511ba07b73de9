//! The controller RPC on the wire: a 4-byte big-endian length, then a `postcard`-encoded
//! [`Request`] or [`Response`]. One request at a time per connection; the answer comes back on it.
//!
//! Invariants: no frame longer than the configured maximum is read (the length is checked before
//! anything is allocated, and the body's buffer grows only with the bytes that arrive) or written; a frame that does not decode is an error for that connection
//! only; errors cross the wire as [`RemoteError`]: strings, except the few openraft must act on
//! (a snapshot chunk out of order), carried as their plain data;
//! - [`read_frame_bounded`] waits a bounded time for a frame's first byte, and a bounded time for
//!   the rest of it: a silent or stalled peer cannot hold a connection forever.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::TypeConfig;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A batch a non-leader forwards to the leader.
    Propose(Vec<u8>),
    /// A broker says it is alive, to the leader (the active controller).
    BrokerHeartbeat(BrokerHeartbeat),
}

/// One broker's heartbeat: its id and the incarnation it registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    pub broker: i32,
    pub incarnation: u128,
}

/// Why a remote call failed on the remote node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteError {
    /// The remote node is not the leader (a proposal is never forwarded twice).
    NotLeader { leader: Option<u64> },
    /// The state machine refused the proposed batch, committed at `index`: it changed nothing.
    Rejected { index: u64, reason: String },
    /// A snapshot chunk that is not the one the remote node expects: the sender starts over.
    SnapshotMismatch(openraft::error::SnapshotMismatch),
    /// Anything else, in words (the remote Raft stopped, ...).
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<u64>, RemoteError>),
    Vote(Result<VoteResponse<u64>, RemoteError>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RemoteError>),
    Propose(Result<u64, RemoteError>),
    BrokerHeartbeat(Result<(), RemoteError>),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode: {0}")]
    Decode(postcard::Error),
    #[error("message does not encode: {0}")]
    Encode(postcard::Error),
    #[error("no frame within {0:?}")]
    Idle(std::time::Duration),
    #[error("frame not complete within {0:?}")]
    Stalled(std::time::Duration),
}

/// Writes one message as a frame.
pub async fn write_frame<T: Serialize>(
    io: &mut (impl AsyncWrite + Unpin),
    message: &T,
    max: usize,
) -> Result<(), FrameError> {
    // Room for the length first, filled in once the body's size is known.
    let mut buf = postcard::to_extend(message, vec![0u8; 4]).map_err(FrameError::Encode)?;
    let len = buf.len() - 4;
    let too_large = FrameError::TooLarge { len, max };
    if len > max {
        return Err(too_large);
    }
    let prefix = u32::try_from(len).map_err(|_| too_large)?;
    buf[..4].copy_from_slice(&prefix.to_be_bytes());
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it; `Ok(None)` when the peer closed cleanly between frames.
pub async fn read_frame<T: for<'a> Deserialize<'a>>(
    io: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut first = [0u8; 1];
    if io.read(&mut first).await? == 0 {
        return Ok(None);
    }
    read_rest(io, first[0], max).await.map(Some)
}

/// As [`read_frame`], but waits at most `idle` for the frame's first byte and at most `rest` for
/// the rest of it.
pub async fn read_frame_bounded<T: for<'a> Deserialize<'a>>(
    io: &mut (impl AsyncRead + Unpin),
    max: usize,
    idle: std::time::Duration,
    rest: std::time::Duration,
) -> Result<Option<T>, FrameError> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(idle, io.read(&mut first)).await {
        Err(_) => return Err(FrameError::Idle(idle)),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
    }
    match tokio::time::timeout(rest, read_rest(io, first[0], max)).await {
        Err(_) => Err(FrameError::Stalled(rest)),
        Ok(r) => r.map(Some),
    }
}

/// Reads the frame whose first byte was `first`: the rest of its length, then its body.
async fn read_rest<T: for<'a> Deserialize<'a>>(
    io: &mut (impl AsyncRead + Unpin),
    first: u8,
    max: usize,
) -> Result<T, FrameError> {
    let mut prefix = [first, 0, 0, 0];
    io.read_exact(&mut prefix[1..]).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Grown as bytes arrive: a peer that only announces a large frame costs nothing.
    let mut body = Vec::new();
    io.take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    postcard::from_bytes(&body).map_err(FrameError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_refuse_oversize_and_garbage() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &Request::Propose(vec![1, 2, 3]), 1024)
            .await
            .unwrap();
        match read_frame::<Request>(&mut b, 1024).await.unwrap() {
            Some(Request::Propose(batch)) => assert_eq!(batch, vec![1, 2, 3]),
            other => panic!("unexpected {other:?}"),
        }
        // Too large to send, too large to read.
        let big = Request::Propose(vec![0; 2000]);
        assert!(matches!(
            write_frame(&mut a, &big, 1024).await,
            Err(FrameError::TooLarge { .. })
        ));
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<Request>(&mut b, 1024).await,
            Err(FrameError::TooLarge { .. })
        ));
        // A frame of garbage decodes to an error, not a panic.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_frame::<Request>(&mut b, 1024).await,
            Err(FrameError::Decode(_))
        ));
        // A peer that closes between frames is a clean end.
        drop(a);
        assert!(read_frame::<Request>(&mut b, 1024).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_snapshot_mismatch_crosses_the_wire_as_itself() {
        let mismatch = openraft::error::SnapshotMismatch {
            expect: openraft::SnapshotSegmentId {
                id: "1-9-1".into(),
                offset: 0,
            },
            got: openraft::SnapshotSegmentId {
                id: "1-9-1".into(),
                offset: 4096,
            },
        };
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let sent = Response::InstallSnapshot(Err(RemoteError::SnapshotMismatch(mismatch.clone())));
        write_frame(&mut a, &sent, 1024).await.unwrap();
        match read_frame::<Response>(&mut b, 1024).await.unwrap() {
            Some(Response::InstallSnapshot(Err(RemoteError::SnapshotMismatch(got)))) => {
                assert_eq!(got, mismatch)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
