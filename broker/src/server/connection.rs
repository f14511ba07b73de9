//! One client connection: frames in, responses out, in request order.
//!
//! Requests are decoded and dispatched one at a time in arrival order, so the synchronous part of
//! a handler (an append, above all) happens in that order; what a handler waits for (a flush for
//! `acks=-1`, data for a long-polling fetch) runs as a future, and a writer task sends the
//! responses strictly in request order, as Kafka requires. At most `queued.max.requests` responses
//! are pending per connection; past that, reading pauses (back-pressure on the client).
//!
//! A frame that is too large, a header that cannot be parsed, an unknown API key or version
//! (other than ApiVersions, which gets a v0 UNSUPPORTED_VERSION answer) closes this connection
//! with a logged reason; no other connection is affected.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use strata_protocol::api::decode_request;
use strata_protocol::frame::FrameCodec;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::handlers::{self, Pending};
use crate::node::Node;

const WRITE_BUFFER_BYTES: usize = 64 * 1024;

pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, node: Arc<Node>) {
    let frame_bytes_max = node.config.i64("socket.request.max.bytes") as usize;
    let inflight_max = node.config.i64("queued.max.requests") as usize;
    let (read_half, write_half) = stream.into_split();
    let mut frames = FramedRead::new(read_half, FrameCodec::new(frame_bytes_max));
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(inflight_max);

    let writer = tokio::spawn(async move {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
        while let Some(mut pending) = pending_rx.recv().await {
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
                    break;
                }
            }
            if pending_rx.is_empty() && out.flush().await.is_err() {
                return;
            }
        }
        let _ = out.flush().await;
        let _ = out.shutdown().await;
    });

    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                break;
            }
        };
        let pending = match decode_request(frame) {
            Ok(request) => handlers::dispatch(&node, request, Some(peer.ip())),
            Err(e) => match e.api_versions_fallback() {
                Some(correlation_id) => handlers::api_versions::unsupported_version(correlation_id),
                None => {
                    tracing::warn!(%peer, error = %e, "closing connection: undecodable request");
                    break;
                }
            },
        };
        if pending_tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(pending_tx);
    let _ = writer.await;
}
