//! The Kafka listener: accepts connections (at most `max.connections`) and serves each one in
//! its own task (see [`connection`]); one handler per API in [`handlers`].

pub mod connection;
pub mod handlers;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::node::Node;

/// Accepts connections until `shutdown` resolves, then stops every connection's task and waits
/// for them (so shutdown closes partitions only once no request can reach them).
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let connections_max = node.settings.server.connections_max;
    let slots = Arc::new(Semaphore::new(connections_max));
    // Every connection's task, so shutdown can stop them all before partitions close.
    let mut connections = tokio::task::JoinSet::new();
    let queued_bytes = connection::queued_bytes_budget(&node);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = &mut shutdown => {
                connections.shutdown().await;
                return;
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit = connections_max, "refusing connection: max.connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let node = Arc::clone(&node);
        let queued_bytes = Arc::clone(&queued_bytes);
        connections.spawn(async move {
            // Counted while the task lives (also when shutdown stops it).
            let _open = crate::metrics::OpenConnection::new();
            connection::serve_connection(stream, peer, node, queued_bytes).await;
            drop(slot);
        });
    }
}
