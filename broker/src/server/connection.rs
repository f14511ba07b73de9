//! One client connection: frames in, responses out, in request order.
//!
//! Requests are decoded and dispatched one at a time in arrival order, so the synchronous part of
//! a handler (an append, above all) happens in that order; what a handler waits for (a flush for
//! `acks=-1`, data for a long-polling fetch) runs as a future, and a writer task sends the
//! responses strictly in request order, as Kafka requires.
//!
//! Limits, each applied by not reading from the socket (back-pressure), never by buffering:
//! - at most `queued.max.requests` requests are in flight per connection;
//! - a request's frame counts against two byte budgets from the moment its size is read (before
//!   its body is) until its response has been written: this connection's
//!   (`socket.request.max.bytes`, so one frame of the largest size always fits once the
//!   connection's earlier requests are answered) and every connection's together
//!   (`queued.max.request.bytes`, at least one largest frame). A request can hold its frame (its
//!   strings are slices of it), so this bounds what clients can pin.
//!
//! The connection ends, and its pending work (a long poll, above all) is dropped at once, when the
//! peer goes away: end of stream or an error on the read side, or a failed write. While reading
//! is paused the socket is still watched for the peer's close (`is_read_closed`, EPOLLRDHUP, is
//! reported even with unread bytes buffered), through a second registration of a duplicate
//! descriptor: readability alone is cleared there after each wake, so unread bytes never make the
//! watch spin, and the reader's own readiness (those bytes are still to be read) is untouched. It is closed
//! after `connections.max.idle.ms` with no request in flight and nothing read or written. An idle
//! connection holds no read buffer (it waits for readability first).
//!
//! A frame that is too large, a header that cannot be parsed, an unknown API key or version
//! (other than ApiVersions, which gets a v0 UNSUPPORTED_VERSION answer) closes this connection
//! with a logged reason, after the answers to its earlier requests; no other connection is
//! affected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use strata_protocol::api::decode_request;
use strata_protocol::frame::{frame_size, FrameError, FRAME_HEADER_BYTES};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::handlers::{self, Pending};
use crate::metrics::RequestTimer;
use crate::node::Node;

const WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Bytes asked of the socket at a time while no frame size says more.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// The byte budget every connection's queued frames share (`queued.max.request.bytes`).
pub fn queued_bytes_budget(node: &Node) -> Arc<Semaphore> {
    let limits = &node.settings.server;
    let total = limits
        .queued_request_bytes_max
        .max(limits.frame_bytes_max)
        .min(Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(total))
}

/// A frame's share of the byte budgets, released when its response is written (or dropped).
struct Held {
    _connection: Option<OwnedSemaphorePermit>,
    _shared: Option<OwnedSemaphorePermit>,
}

/// What the reader and the writer share to tell whether the connection is idle.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` of the last response written.
    last_write_ms: AtomicU64,
}

impl Activity {
    fn since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }
}

/// Why reading frames stopped.
enum ReadEnd {
    /// The peer went away: end of stream or a read error.
    Gone,
    /// A frame this connection must not serve.
    Bad(FrameError),
}

/// Cuts frames out of the socket, taking each frame's share of the budgets once its size is known
/// and before its body is read.
struct FrameReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    frame_bytes_max: usize,
    connection_budget: Arc<Semaphore>,
    shared_budget: Arc<Semaphore>,
    /// The budgets held for the frame whose size has been read, while its body is read.
    held: Option<Held>,
    last_read: Instant,
}

impl FrameReader {
    /// The next frame with its budget share. Cancel-safe: a partly read frame stays buffered.
    async fn next(&mut self) -> Result<(Bytes, Held), ReadEnd> {
        loop {
            if let Some(size) = frame_size(&self.buf, self.frame_bytes_max).map_err(ReadEnd::Bad)? {
                if self.held.is_none() {
                    let held = match self.try_take_budget(size) {
                        Some(held) => held,
                        // Reading is paused until the budgets have room: watch for the peer
                        // leaving meanwhile.
                        None => tokio::select! {
                            held = self.take_budget(size) => held,
                            () = self.peer_closed() => return Err(ReadEnd::Gone),
                        },
                    };
                    self.held = Some(held);
                }
                let wanted = FRAME_HEADER_BYTES + size;
                if self.buf.len() >= wanted {
                    self.buf.advance(FRAME_HEADER_BYTES);
                    let frame = self.buf.split_to(size).freeze();
                    let held = self.held.take().ok_or(ReadEnd::Gone)?;
                    return Ok((frame, held));
                }
                self.read_more(wanted - self.buf.len()).await?;
            } else {
                self.read_more(READ_CHUNK_BYTES).await?;
            }
        }
    }

    /// The budgets for a frame of `size` bytes if both have room now.
    fn try_take_budget(&self, size: usize) -> Option<Held> {
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let connection = Arc::clone(&self.connection_budget)
            .try_acquire_many_owned(permits)
            .ok()?;
        let shared = Arc::clone(&self.shared_budget)
            .try_acquire_many_owned(permits)
            .ok()?;
        Some(Held {
            _connection: Some(connection),
            _shared: Some(shared),
        })
    }

    async fn take_budget(&self, size: usize) -> Held {
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        // Connection first: a connection over its own budget waits without holding shared bytes.
        // The semaphores are never closed, so acquiring only fails if they were: then no budget.
        let connection = Arc::clone(&self.connection_budget)
            .acquire_many_owned(permits)
            .await
            .ok();
        let shared = Arc::clone(&self.shared_budget)
            .acquire_many_owned(permits)
            .await
            .ok();
        Held {
            _connection: connection,
            _shared: shared,
        }
    }

    /// Resolves when the peer has closed its side or the socket failed; for a connection whose
    /// reading is paused (nothing else would notice). Cancel-safe.
    async fn peer_closed(&self) {
        use std::os::fd::AsFd;
        // A second registration (of a duplicate descriptor), so clearing readiness here never
        // hides from the reader the bytes it has yet to read. Without one (out of descriptors),
        // the close is noticed when reading resumes, as before.
        let watch = self
            .half
            .as_ref()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| {
                // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same
                // until the AsyncFd is dropped.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
            });
        let Some(watch) = watch else {
            return std::future::pending().await;
        };
        loop {
            match watch.ready(Interest::READABLE).await {
                Ok(ready) if ready.ready().is_read_closed() => return,
                // Bytes we are not reading yet, not a close: wait for the next event (more
                // bytes, bounded by the socket buffer, or the close), not this one again.
                Ok(mut ready) => ready.clear_ready(),
                Err(_) => return,
            }
        }
    }

    /// Reads what is available, reserving room for up to `wanted` more bytes only once the socket
    /// is readable (an idle connection holds no buffer).
    async fn read_more(&mut self, wanted: usize) -> Result<(), ReadEnd> {
        loop {
            self.half.readable().await.map_err(|_| ReadEnd::Gone)?;
            self.buf.reserve(
                wanted
                    .max(READ_CHUNK_BYTES)
                    .min(self.frame_bytes_max + FRAME_HEADER_BYTES),
            );
            match self.half.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(ReadEnd::Gone),
                Ok(_) => {
                    self.last_read = Instant::now();
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(ReadEnd::Gone),
            }
        }
    }

    /// Drops the read buffer when it holds nothing, so an idle connection costs no buffer.
    fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    shared_budget: Arc<Semaphore>,
) {
    let frame_bytes_max = node.settings.server.frame_bytes_max;
    let inflight_max = node.settings.server.inflight_requests_max.max(1);
    let idle_max = node.settings.server.connection_idle_max;
    let (read_half, write_half) = stream.into_split();
    let mut reader = FrameReader {
        half: read_half,
        buf: BytesMut::new(),
        frame_bytes_max,
        connection_budget: Arc::new(Semaphore::new(frame_bytes_max.min(Semaphore::MAX_PERMITS))),
        shared_budget,
        held: None,
        last_read: Instant::now(),
    };
    let activity = Arc::new(Activity {
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_write_ms: AtomicU64::new(0),
    });
    let (pending_tx, pending_rx) =
        mpsc::channel::<(Pending, Held, Option<RequestTimer>)>(inflight_max);
    let mut writer = tokio::spawn(write_responses(
        write_half,
        pending_rx,
        peer,
        Arc::clone(&activity),
    ));

    let idle_timer = tokio::time::sleep(idle_max);
    tokio::pin!(idle_timer);
    let mut peer_gone = false;
    let mut writer_done = false;
    loop {
        reader.release_idle_buffer();
        let read = tokio::select! {
            read = reader.next() => read,
            // The writer stops only when a write failed: the peer is gone.
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            _ = &mut idle_timer => {
                let last_write = activity.started
                    + Duration::from_millis(activity.last_write_ms.load(Ordering::Relaxed));
                let last = reader.last_read.max(last_write);
                let now = Instant::now();
                let busy = activity.in_flight.load(Ordering::Acquire) > 0;
                if !busy && now >= last + idle_max {
                    tracing::debug!(%peer, "closing connection: idle for connections.max.idle.ms");
                    break;
                }
                idle_timer.as_mut().reset(if busy { now + idle_max } else { last + idle_max });
                continue;
            }
        };
        let (frame, held) = match read {
            Ok(f) => f,
            Err(ReadEnd::Gone) => {
                peer_gone = true;
                break;
            }
            Err(ReadEnd::Bad(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                break;
            }
        };
        let mut timer = None;
        let pending = match decode_request(frame) {
            Ok(request) => {
                timer = RequestTimer::start(request.api_key);
                handlers::dispatch(&node, request, Some(peer.ip()))
            }
            Err(e) => match e.api_versions_fallback() {
                Some(correlation_id) => handlers::api_versions::unsupported_version(correlation_id),
                None => {
                    tracing::warn!(%peer, error = %e, "closing connection: undecodable request");
                    break;
                }
            },
        };
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        // Waiting for a free slot is the `queued.max.requests` back-pressure; reading is paused
        // meanwhile, so watch for the peer leaving.
        let slot = match pending_tx.try_reserve() {
            Ok(slot) => Ok(slot),
            Err(mpsc::error::TrySendError::Full(())) => tokio::select! {
                slot = pending_tx.reserve() => slot.map_err(|_| ()),
                () = reader.peer_closed() => Err(()),
            },
            Err(mpsc::error::TrySendError::Closed(())) => Err(()),
        };
        match slot {
            Ok(slot) => slot.send((pending, held, timer)),
            Err(()) => {
                peer_gone = true;
                break;
            }
        }
    }
    drop(pending_tx);
    if writer_done {
        return;
    }
    if peer_gone {
        // Nobody will read the answers: drop what is pending (a long poll, a flush wait) now.
        writer.abort();
    }
    let _ = writer.await;
}

/// Sends the responses in request order until the reader is done or a write fails.
async fn write_responses(
    write_half: tokio::net::tcp::OwnedWriteHalf,
    mut pending_rx: mpsc::Receiver<(Pending, Held, Option<RequestTimer>)>,
    peer: SocketAddr,
    activity: Arc<Activity>,
) {
    let mut write_half = write_half;
    // The buffer exists only while answers are queued: an idle connection holds none.
    'idle: while let Some(first) = pending_rx.recv().await {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
        let mut next = Some(first);
        while let Some((mut pending, held, timer)) = next.take() {
            // Send what is buffered before waiting on a response that is not ready (an acks=-1
            // flush, a long poll): otherwise finished responses would sit behind it.
            let outcome = match (&mut pending).now_or_never() {
                Some(outcome) => outcome,
                None => {
                    if out.flush().await.is_err() {
                        return;
                    }
                    pending.await
                }
            };
            match outcome {
                Ok(Some(bytes)) => {
                    if out.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(%peer, %reason, "closing connection");
                    write_half = out.into_inner();
                    break 'idle;
                }
            }
            drop(held);
            if let Some(timer) = timer {
                timer.finish();
            }
            activity
                .last_write_ms
                .store(activity.since_start(Instant::now()), Ordering::Relaxed);
            activity.in_flight.fetch_sub(1, Ordering::AcqRel);
            next = pending_rx.try_recv().ok();
        }
        if out.flush().await.is_err() {
            return;
        }
        write_half = out.into_inner();
    }
    let _ = write_half.shutdown().await;
}
