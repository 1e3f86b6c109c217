//! Length-prefixed framing: every ZEO message, the handshake included, is a
//! 4-byte big-endian length followed by that many bytes (ZEO:
//! `asyncio/smp.py`). There is no other header and no checksum.
//!
//! ZEO 5/6 trusts the length it reads; a server cannot, because a client
//! that sends `ff ff ff ff` would make it reserve 4 GiB. [`FrameCodec`]
//! therefore has an explicit maximum and rejects a longer prefix with
//! [`FrameError::TooLong`] as soon as the 4 header bytes are in, before any
//! buffer grows for the body. Bodies are not pre-allocated either: the
//! buffer grows only as bytes actually arrive.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default cap on one frame's payload: 256 MiB. ZEO's large frames are data
/// records (ZODB tests store 1.25 MB records; applications store far larger
/// ones) and 59000-byte blob chunks, so this leaves room for big records
/// while keeping one hostile connection from taking the machine's memory.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 256 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix (read, or of a payload to write) above the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLong {
        /// The length the prefix announces (or the payload has).
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {buffered} of {expected} bytes received")]
    Truncated {
        /// Bytes buffered (prefix included).
        buffered: usize,
        /// Bytes the frame needs (prefix included); 4 when the prefix
        /// itself is incomplete.
        expected: u64,
    },
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The ZEO framing as a `tokio_util` codec.
///
/// Decoding yields each payload as [`Bytes`] (a zero-copy view into the
/// read buffer), so message decoders can keep slices of it (data records,
/// blob chunks) without copying.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_length: usize,
    /// Reserve a body's announced length as soon as its prefix is in.
    reserve_body: bool,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LENGTH)
    }
}

impl FrameCodec {
    /// A codec accepting payloads of at most `max_frame_length` bytes (the
    /// wire format caps them at `u32::MAX` anyway).
    pub fn new(max_frame_length: usize) -> FrameCodec {
        FrameCodec {
            max_frame_length,
            reserve_body: false,
        }
    }

    /// A client's codec: once a prefix (within the maximum) is in, the
    /// whole body is reserved at once, as ZEO's own clients trust their
    /// server to announce what it sends. A multi-megabyte data record then
    /// arrives into one buffer instead of one that doubles, copying itself
    /// at each step, while it comes in.
    pub fn trusting(max_frame_length: usize) -> FrameCodec {
        FrameCodec {
            max_frame_length,
            reserve_body: true,
        }
    }

    /// The configured maximum payload length.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// The payload length announced by a complete 4-byte prefix at the
    /// start of `src`, checked against the maximum (`None` until the
    /// prefix is complete): for a reader that takes frames in place.
    pub fn peek_len(&self, src: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header);
        match usize::try_from(len) {
            Ok(len) if len <= self.max_frame_length => Ok(Some(len)),
            _ => Err(FrameError::TooLong {
                len: u64::from(len),
                max: self.max_frame_length,
            }),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = self.peek_len(src)? else {
            return Ok(None);
        };
        if src.len() - HEADER_LEN < len {
            if self.reserve_body {
                src.reserve(HEADER_LEN + len - src.len());
            }
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let expected = match self.peek_len(src)? {
            Some(len) => (HEADER_LEN + len) as u64,
            None => HEADER_LEN as u64,
        };
        Err(FrameError::Truncated {
            buffered: src.len(),
            expected,
        })
    }
}

impl FrameCodec {
    /// Writes the prefix and `payload` into `dst`.
    pub fn encode_slice(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let too_long = || FrameError::TooLong {
            len: payload.len() as u64,
            max: self.max_frame_length,
        };
        if payload.len() > self.max_frame_length {
            return Err(too_long());
        }
        let len = u32::try_from(payload.len()).map_err(|_| too_long())?;
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_u32(len);
        dst.put_slice(payload);
        Ok(())
    }
}

/// Writes one frame whose payload is `parts` concatenated, straight from
/// the parts (vectored writes, no copy into a buffer): how large replies
/// go out. The caller must have flushed anything buffered before it.
pub async fn write_frame_parts<W>(w: &mut W, parts: &[Bytes], max: usize) -> Result<(), FrameError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let len: usize = parts.iter().map(Bytes::len).sum();
    let too_long = || FrameError::TooLong {
        len: len as u64,
        max,
    };
    if len > max {
        return Err(too_long());
    }
    let header = u32::try_from(len).map_err(|_| too_long())?.to_be_bytes();
    let mut left: std::collections::VecDeque<Bytes> =
        std::iter::once(Bytes::copy_from_slice(&header))
            .chain(parts.iter().filter(|p| !p.is_empty()).cloned())
            .collect();
    while !left.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = left
            .iter()
            .take(64)
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        while n > 0 {
            let Some(front) = left.front_mut() else { break };
            if n >= front.len() {
                n -= front.len();
                left.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    w.flush().await?;
    Ok(())
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_slice(&item, dst)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_slice(item, dst)
    }
}

/// One frame as bytes on the wire (prefix + payload), for tests and tools
/// that write raw streams. Fails only above `u32::MAX` bytes.
pub fn frame_bytes(payload: &[u8]) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    FrameCodec::new(u32::MAX as usize).encode_slice(payload, &mut out)?;
    Ok(out.freeze())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(f) = codec.decode(buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn captured_handshake_frame() {
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x02Z5"[..]);
        let mut codec = FrameCodec::default();
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec![Bytes::from_static(b"Z5")]
        );
        assert!(buf.is_empty());
        assert_eq!(&frame_bytes(b"M5").unwrap()[..], b"\x00\x00\x00\x02M5");
    }

    /// A frame written from parts, through a pipe that takes a few bytes
    /// per write, is the frame the codec writes; one over the limit is
    /// refused before a byte is sent.
    #[tokio::test]
    async fn frames_written_from_parts_are_frames() {
        use tokio::io::AsyncReadExt;
        let parts: Vec<Bytes> = vec![
            Bytes::from_static(b"\x80\x03"),
            Bytes::new(),
            Bytes::from(
                (0..200_000u32)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            ),
            Bytes::from_static(b"tail."),
        ];
        let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let (mut a, mut b) = tokio::io::duplex(997);
        let writer = {
            let parts = parts.clone();
            tokio::spawn(async move { write_frame_parts(&mut a, &parts, 1 << 20).await })
        };
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(got, frame_bytes(&whole).unwrap().to_vec());

        let (mut a, _b) = tokio::io::duplex(64);
        assert!(matches!(
            write_frame_parts(&mut a, &parts, 100_000).await,
            Err(FrameError::TooLong {
                len: 200_007,
                max: 100_000
            })
        ));
    }

    #[test]
    fn a_trusting_codec_reserves_the_body_and_decodes_alike() {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let wire = frame_bytes(&body).unwrap();
        for mut codec in [FrameCodec::new(8 << 20), FrameCodec::trusting(8 << 20)] {
            let mut buf = BytesMut::from(&wire[..10]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            if codec.reserve_body {
                assert!(buf.capacity() >= wire.len(), "body reserved at once");
            } else {
                assert!(buf.capacity() < 1 << 20, "growth only as bytes arrive");
            }
            buf.extend_from_slice(&wire[10..]);
            assert_eq!(
                decode_all(&mut codec, &mut buf),
                vec![Bytes::from(body.clone())]
            );
        }
        // The maximum still holds before anything is reserved.
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00"[..]);
        assert!(matches!(
            FrameCodec::trusting(1 << 20).decode(&mut buf),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn four_gib_prefix_is_rejected_before_allocating() {
        let mut codec = FrameCodec::new(1 << 20);
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        let cap = buf.capacity();
        match codec.decode(&mut buf) {
            Err(FrameError::TooLong { len, max }) => {
                assert_eq!((len, max), (u32::MAX as u64, 1 << 20));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.capacity(), cap, "no reservation for the body");
        // The default cap rejects it too.
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        assert!(matches!(
            FrameCodec::default().decode(&mut buf),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn partial_frames_wait_then_complete() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let wire = [
            &frame_bytes(b"hello").unwrap()[..],
            &frame_bytes(b"").unwrap()[..],
        ]
        .concat();
        for (i, b) in wire.iter().enumerate() {
            buf.put_u8(*b);
            let got = codec.decode(&mut buf).unwrap();
            match i {
                8 => assert_eq!(got.as_deref(), Some(&b"hello"[..])),
                12 => assert_eq!(got.as_deref(), Some(&b""[..])),
                _ => assert_eq!(got, None),
            }
        }
    }

    #[test]
    fn truncated_stream_is_a_typed_error_at_eof() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x05abc"[..]);
        match codec.decode_eof(&mut buf) {
            Err(FrameError::Truncated { buffered, expected }) => {
                assert_eq!((buffered, expected), (7, 9));
            }
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::from(&b"\x00\x00"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated {
                buffered: 2,
                expected: 4
            })
        ));
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn encoder_enforces_the_maximum() {
        let mut codec = FrameCodec::new(3);
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(Bytes::from_static(b"abcd"), &mut dst),
            Err(FrameError::TooLong { len: 4, max: 3 })
        ));
        codec.encode(&b"abc"[..], &mut dst).unwrap();
        assert_eq!(&dst[..], b"\x00\x00\x00\x03abc");
    }

    proptest! {
        /// Any split of a stream of frames decodes to the same frames.
        #[test]
        fn any_split_decodes_the_same(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(0usize..4000, 0..10),
        ) {
            let mut wire = Vec::new();
            for p in &payloads {
                wire.extend_from_slice(&frame_bytes(p).unwrap());
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(wire.len());
            let mut codec = FrameCodec::new(1000);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts {
                buf.extend_from_slice(&wire[at..c]);
                at = c;
                got.extend(decode_all(&mut codec, &mut buf));
            }
            prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            let want: Vec<Bytes> = payloads.into_iter().map(Bytes::from).collect();
            prop_assert_eq!(got, want);
        }

        /// Arbitrary bytes never panic and never yield a frame above the cap.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut codec = FrameCodec::new(64);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                prop_assert!(f.len() <= 64);
            }
            let _ = codec.decode_eof(&mut buf);
        }
    }
}
