//! The first frame each way: protocol announcement and answer (spec
//! zeo.md §2; ZEO: `asyncio/server.py` `finish_connection`,
//! `asyncio/client.py` `Protocol.finish_connection`).
//!
//! The server speaks first with `<encoding letter><version>` (`Z5` or
//! `M5`). The client answers with the same letter and `min(announced,
//! its newest version)`, compared as **byte strings** the way Python
//! compares `bytes` (so `b"3101" < b"4"`), and gives up if the result is not
//! a version it speaks. Instead of a version a monitoring client may send
//! `ruok`, which makes the server answer one JSON frame and close.

use bytes::Bytes;

use crate::encoding::Encoding;

/// The versions a ZEO 5/6 server accepts (`ServerProtocol.protocols`).
/// ZEO 5.4+ can only be built to announce `5`.
pub const SERVER_VERSIONS: &[&[u8]] = &[b"5"];

/// The versions a ZEO ≥ 5.4 client speaks (`Protocol.protocols`); ZEO
/// 5.0–5.3 also listed 309, 310, 3101 and 4 (removed for data-corruption
/// bugs), which this crate does not implement.
pub const CLIENT_VERSIONS: &[&[u8]] = &[b"5"];

/// What a monitoring client sends instead of a protocol version.
pub const RUOK: &[u8] = b"ruok";

/// A negotiated protocol: encoding and version, e.g. `Z5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// `Z` (pickle) or `M` (msgpack).
    pub encoding: Encoding,
    /// The version bytes after the letter, e.g. `5`.
    pub version: Bytes,
}

impl Protocol {
    /// ZEO 5 with the given encoding.
    pub fn v5(encoding: Encoding) -> Protocol {
        Protocol {
            encoding,
            version: Bytes::from_static(b"5"),
        }
    }

    /// The frame payload: letter followed by the version.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(1 + self.version.len());
        out.push(self.encoding.letter());
        out.extend_from_slice(&self.version);
        Bytes::from(out)
    }
}

/// A handshake frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first byte is neither `Z` nor `M` (a ZEO 4 client answers `Z4`,
    /// which has a valid letter but the wrong version).
    #[error("bad handshake {frame:?}: unknown encoding letter")]
    UnknownEncoding {
        /// The frame received.
        frame: Bytes,
    },
    /// The version is not one this side speaks; Python's server logs "bad
    /// handshake" and closes, its client raises `ProtocolError`.
    #[error("bad handshake {frame:?}: unsupported protocol version")]
    UnsupportedVersion {
        /// The frame received.
        frame: Bytes,
    },
    /// An empty frame.
    #[error("bad handshake: empty frame")]
    Empty,
}

/// What a client's first frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// Speak this protocol from now on.
    Protocol(Protocol),
    /// Send the server status as one JSON frame, then close.
    Ruok,
}

/// The server's first frame for an encoding: `Z5` or `M5`.
pub fn server_announcement(encoding: Encoding) -> Bytes {
    Protocol::v5(encoding).to_bytes()
}

/// Parses the client's answer on the server side. Like Python's server, the
/// encoding is taken from the client's frame, not from what was announced
/// (clients always echo the letter).
pub fn parse_client_hello(frame: &Bytes) -> Result<ClientHello, HandshakeError> {
    if frame.as_ref() == RUOK {
        return Ok(ClientHello::Ruok);
    }
    let (&letter, version) = frame.split_first().ok_or(HandshakeError::Empty)?;
    let encoding =
        Encoding::from_letter(letter).ok_or_else(|| HandshakeError::UnknownEncoding {
            frame: frame.clone(),
        })?;
    if !SERVER_VERSIONS.contains(&version) {
        return Err(HandshakeError::UnsupportedVersion {
            frame: frame.clone(),
        });
    }
    Ok(ClientHello::Protocol(Protocol {
        encoding,
        version: frame.slice(1..),
    }))
}

/// The client's side: given the server's announcement and the versions the
/// client speaks (oldest first, as Python lists them), the protocol to use
/// (whose [`Protocol::to_bytes`] is the answer frame).
///
/// The version is `min(announced, newest supported)` by byte-string order,
/// which is what Python's `min()` on `bytes` (and NEO's Go client) does;
/// it must then be in `supported`.
pub fn client_answer(
    announcement: &Bytes,
    supported: &[&[u8]],
) -> Result<Protocol, HandshakeError> {
    let (&letter, announced) = announcement.split_first().ok_or(HandshakeError::Empty)?;
    let encoding =
        Encoding::from_letter(letter).ok_or_else(|| HandshakeError::UnknownEncoding {
            frame: announcement.clone(),
        })?;
    let newest = supported.last().copied().unwrap_or_default();
    let version = std::cmp::min(announced, newest);
    if !supported.contains(&version) {
        return Err(HandshakeError::UnsupportedVersion {
            frame: announcement.clone(),
        });
    }
    Ok(Protocol {
        encoding,
        version: Bytes::copy_from_slice(version),
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn announcements_as_captured() {
        assert_eq!(server_announcement(Encoding::Pickle), b(b"Z5"));
        assert_eq!(server_announcement(Encoding::Msgpack), b(b"M5"));
    }

    #[test]
    fn server_accepts_5_and_ruok_only() {
        assert_eq!(
            parse_client_hello(&b(b"Z5")).unwrap(),
            ClientHello::Protocol(Protocol::v5(Encoding::Pickle))
        );
        assert_eq!(
            parse_client_hello(&b(b"M5")).unwrap(),
            ClientHello::Protocol(Protocol::v5(Encoding::Msgpack))
        );
        assert_eq!(parse_client_hello(&b(b"ruok")).unwrap(), ClientHello::Ruok);
        // A ZEO 4 client answers min(b"Z5", b"Z4") = b"Z4": closed (captured).
        assert!(matches!(
            parse_client_hello(&b(b"Z4")),
            Err(HandshakeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            parse_client_hello(&b(b"Z3101")),
            Err(HandshakeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            parse_client_hello(&b(b"X5")),
            Err(HandshakeError::UnknownEncoding { .. })
        ));
        assert_eq!(parse_client_hello(&b(b"")), Err(HandshakeError::Empty));
    }

    #[test]
    fn client_min_is_a_byte_string_min() {
        let old: &[&[u8]] = &[b"309", b"310", b"3101", b"4", b"5"];
        // ZEO 5.0-5.3 client against a ZEO 4 server announcing Z4.
        assert_eq!(client_answer(&b(b"Z4"), old).unwrap().to_bytes(), b(b"Z4"));
        // Byte order, not numbers: b"3101" < b"4" < b"5" although 3101 > 5.
        assert_eq!(
            client_answer(&b(b"Z3101"), old).unwrap().to_bytes(),
            b(b"Z3101")
        );
        assert_eq!(
            client_answer(&b(b"M6"), CLIENT_VERSIONS)
                .unwrap()
                .to_bytes(),
            b(b"M5")
        );
        assert_eq!(
            client_answer(&b(b"Z5"), CLIENT_VERSIONS)
                .unwrap()
                .to_bytes(),
            b(b"Z5")
        );
        // A ZEO 5.4+ client cannot talk to a ZEO 4 server.
        assert!(matches!(
            client_answer(&b(b"Z4"), CLIENT_VERSIONS),
            Err(HandshakeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            client_answer(&b(b"Q5"), CLIENT_VERSIONS),
            Err(HandshakeError::UnknownEncoding { .. })
        ));
    }
}
