//! This node's view of the cluster metadata: the newest [`MetadataImage`] its quorum member applied,
//! and the state machine that builds it from committed metadata batches.
//!
//! Invariants:
//! - the image is swapped whole (one atomic pointer): a reader sees one image, never a mix, and
//!   never takes a lock (`MetadataView::image` is a reference-count increment);
//! - images only move forward: each one published has a higher offset than the one before
//!   (a snapshot installed over a newer state is refused by the quorum, never published);
//! - a batch that does not decode or does not apply is rejected with the image unchanged, on every
//!   member alike (decoding and `MetadataImage::apply` depend only on the batch and the image).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::image::MetadataImage;
use super::quorum::{Applied, Fatal, MetadataStateMachine, Rejected};
use super::records::decode_batch;
use crate::ids::Offset;

/// The newest image, shared by the state machine (writer) and every request handler (readers).
#[derive(Clone)]
pub struct MetadataView {
    current: Arc<ArcSwap<MetadataImage>>,
    /// The offset of the image just published: woken on every swap.
    published: watch::Sender<Offset>,
}

impl Default for MetadataView {
    fn default() -> Self {
        MetadataView::new()
    }
}

impl MetadataView {
    pub fn new() -> MetadataView {
        let image = MetadataImage::empty();
        let (published, _) = watch::channel(image.offset());
        MetadataView {
            current: Arc::new(ArcSwap::from_pointee(image)),
            published,
        }
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.current.load_full()
    }

    /// Woken each time a new image is published; the value is its offset.
    pub fn subscribe(&self) -> watch::Receiver<Offset> {
        self.published.subscribe()
    }

    fn publish(&self, image: MetadataImage) {
        let offset = image.offset();
        self.current.store(Arc::new(image));
        self.published.send_replace(offset);
    }
}

/// The quorum's state machine: the image, rebuilt batch by batch, published to a [`MetadataView`].
pub struct ImageStateMachine {
    image: MetadataImage,
    view: MetadataView,
}

impl ImageStateMachine {
    pub fn new(view: MetadataView) -> ImageStateMachine {
        ImageStateMachine {
            image: MetadataImage::empty(),
            view,
        }
    }
}

impl MetadataStateMachine for ImageStateMachine {
    fn apply(&mut self, index: u64, batch: &[u8]) -> Result<Applied, Fatal> {
        let offset = Offset(index as i64);
        let records = match decode_batch(batch) {
            Ok(records) => records,
            Err(e) => return Ok(Err(Rejected(format!("undecodable batch: {e}")))),
        };
        match self.image.apply(offset, &records) {
            Ok((next, _delta)) => {
                self.image = next.clone();
                self.view.publish(next);
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(Rejected(e.to_string()))),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.image.encode_snapshot()
    }

    fn install(&mut self, _index: u64, snapshot: &[u8]) -> Result<(), String> {
        let image = MetadataImage::decode_snapshot(snapshot).map_err(|e| e.to_string())?;
        self.image = image.clone();
        self.view.publish(image);
        Ok(())
    }

    fn fresh(&self) -> Box<dyn MetadataStateMachine> {
        // The same view: `install` publishes only a snapshot that decoded and applied whole, so a
        // bad one leaves readers on the good image.
        Box::new(ImageStateMachine::new(self.view.clone()))
    }
}
