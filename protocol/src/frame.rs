//! Length-prefixed framing of Kafka requests and responses.
//!
//! A frame is a 4-byte big-endian size followed by that many bytes. Invariants:
//! - a decoded frame is never larger than `frame_bytes_max`; a larger or negative size is an error
//!   that the caller answers by closing the connection (Kafka does the same), never by panicking;
//! - the decoder reserves at most `frame_bytes_max` for a frame, so a peer cannot make us allocate
//!   more than the limit by announcing a huge size.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Size of the length prefix in front of every frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a byte stream could not be cut into frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge { size_bytes: i64, limit_bytes: usize },
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Cuts a byte stream into frames of at most `frame_bytes_max` bytes each.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    frame_bytes_max: usize,
}

impl FrameCodec {
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameCodec { frame_bytes_max }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = frame_size(src, self.frame_bytes_max)? else {
            return Ok(None);
        };
        if src.len() < FRAME_HEADER_BYTES + size {
            src.reserve(FRAME_HEADER_BYTES + size - src.len());
            return Ok(None);
        }
        src.advance(FRAME_HEADER_BYTES);
        Ok(Some(src.split_to(size).freeze()))
    }
}

/// The body size a frame's 4-byte prefix at the start of `src` announces, checked against
/// `frame_bytes_max`; `None` while the prefix is incomplete. For readers that cut frames
/// themselves (the broker's connection takes a byte budget before reading a body).
pub fn frame_size(src: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = src.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(*prefix);
    let size = usize::try_from(size).map_err(|_| FrameError::NegativeSize(size))?;
    if size > frame_bytes_max {
        return Err(FrameError::TooLarge {
            size_bytes: size as i64,
            limit_bytes: frame_bytes_max,
        });
    }
    Ok(Some(size))
}

/// Responses are encoded by the caller with their size prefix already in place (see
/// [`crate::api::encode_response`]); the encoder only appends them.
impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(payload.len() as i32);
        b.put_slice(payload);
        b
    }

    #[test]
    fn splits_frames_and_waits_for_partial_ones() {
        let mut codec = FrameCodec::new(100);
        let mut buf = framed(b"hello");
        buf.extend_from_slice(&framed(b"world")[..6]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap(),
            Bytes::from_static(b"hello")
        );
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"rld");
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap(),
            Bytes::from_static(b"world")
        );
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn refuses_oversized_and_negative_sizes() {
        let mut codec = FrameCodec::new(4);
        let mut buf = framed(b"hello");
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::NegativeSize(-1))
        ));
    }
}
