//! The invalidation message and its wire form, signed with HMAC-SHA256.
//!
//! ```text
//! [2] node:u64 incarnation:u64 seq:u64 version:u64 kind:u8 len:u16 target  mac:[32]
//! ```
//!
//! Kinds 0 to 3 are invalidations (key, pattern, tag, dependents) with a non-empty
//! target and their own sequence number; kind 4 is a digest, with an empty target, whose
//! sequence number is the last one its sender gave an invalidation.
//!
//! The version's high bits are the sender's clock (Unix milliseconds), so the frame says
//! when it was sent; the incarnation says which start of the sender it comes from.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::target::{Target, TargetTooLong, MAX_TARGET};

const FORMAT: u8 = 2;
/// Bytes before the target.
const HEAD: usize = 36;
const MAC_LEN: usize = 32;
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) node: u64,
    /// Which start of the sender: a new one each time a coordinator starts.
    pub(crate) incarnation: u64,
    pub(crate) seq: u64,
    pub(crate) version: u64,
    /// What to invalidate; `None` for a digest (see [`Message::digest`]).
    pub(crate) target: Option<Target>,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        <Hmac<Sha256> as Mac>::new_from_slice(&[0]).expect("HMAC accepts any key length")
    })
}

/// The kind byte of a digest.
const DIGEST: u8 = 4;

impl Message {
    /// A digest: says that `seq` is the last number its sender gave an invalidation, so
    /// that a receiver that missed the last frames of a sender gone quiet sees the gap.
    pub(crate) fn digest(node: u64, incarnation: u64, seq: u64, version: u64) -> Self {
        Message {
            node,
            incarnation,
            seq,
            version,
            target: None,
        }
    }

    /// Whether this is a digest rather than an invalidation.
    pub(crate) fn is_digest(&self) -> bool {
        self.target.is_none()
    }

    /// The signed frame; a target longer than [`MAX_TARGET`] is refused, never cut.
    pub(crate) fn encode(&self, secret: &[u8]) -> Result<Bytes, TargetTooLong> {
        let (kind, target) = match &self.target {
            Some(t) => {
                t.check_len()?;
                let kind = match t {
                    Target::Key(_) => 0u8,
                    Target::Pattern(_) => 1,
                    Target::Tag(_) => 2,
                    Target::Dependents(_) => 3,
                };
                (kind, t.text().as_bytes())
            }
            None => (DIGEST, &[][..]),
        };
        let mut out = BytesMut::with_capacity(HEAD + target.len() + MAC_LEN);
        out.put_u8(FORMAT);
        out.put_u64_le(self.node);
        out.put_u64_le(self.incarnation);
        out.put_u64_le(self.seq);
        out.put_u64_le(self.version);
        out.put_u8(kind);
        out.put_u16_le(target.len() as u16);
        out.put_slice(target);
        let mut m = mac(secret);
        m.update(&out);
        out.put_slice(&m.finalize().into_bytes());
        Ok(out.freeze())
    }

    /// Decodes a frame; `None` if it is malformed, oversized or not signed with `secret`.
    pub(crate) fn decode(frame: &[u8], secret: &[u8]) -> Option<Self> {
        if frame.len() < HEAD + MAC_LEN || frame.len() > HEAD + MAX_TARGET + MAC_LEN {
            return None;
        }
        let (body, tag) = frame.split_at(frame.len() - MAC_LEN);
        let mut m = mac(secret);
        m.update(body);
        m.verify_slice(tag).ok()?;
        if body[0] != FORMAT {
            return None;
        }
        let u64_at = |at: usize| {
            let mut a = [0; 8];
            a.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let len = u16::from_le_bytes([body[34], body[35]]) as usize;
        let target = std::str::from_utf8(body.get(HEAD..)?).ok()?;
        if target.len() != len || target.is_empty() != (body[33] == DIGEST) {
            return None;
        }
        let target = match body[33] {
            0 => Some(Target::Key(target.to_owned())),
            1 => Some(Target::Pattern(target.to_owned())),
            2 => Some(Target::Tag(target.to_owned())),
            3 => Some(Target::Dependents(target.to_owned())),
            DIGEST => None,
            _ => return None,
        };
        Some(Message {
            node: u64_at(1),
            incarnation: u64_at(9),
            seq: u64_at(17),
            version: u64_at(25),
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_forgeries_are_refused() {
        let m = Message {
            node: 7,
            incarnation: 11,
            seq: 3,
            version: 99,
            target: Some(Target::Pattern("provider:*".into())),
        };
        let frame = m.encode(b"a secret of 16 bytes").unwrap();
        assert_eq!(Message::decode(&frame, b"a secret of 16 bytes"), Some(m));
        assert_eq!(
            Message::decode(&frame, b"another secret!!"),
            None,
            "wrong key"
        );
        for i in 0..frame.len() {
            let mut bad = frame.to_vec();
            bad[i] ^= 1;
            assert_eq!(
                Message::decode(&bad, b"a secret of 16 bytes"),
                None,
                "flip at {i}"
            );
        }
        assert_eq!(
            Message::decode(&frame[..frame.len() - 1], b"a secret of 16 bytes"),
            None
        );
        assert_eq!(Message::decode(&[], b"x"), None);
        assert_eq!(Message::decode(&vec![0; 100_000], b"x"), None, "oversized");
    }

    #[test]
    fn digests_round_trip_and_carry_no_target() {
        let secret = b"a secret of 16 bytes";
        let d = Message::digest(7, 11, 42, 99);
        let frame = d.encode(secret).unwrap();
        let back = Message::decode(&frame, secret).unwrap();
        assert!(back.is_digest());
        assert_eq!(back, d);
        // An invalidation kind with an empty target, or a digest with one, is malformed
        // (signed correctly, so only the shape refuses it).
        let mut forged = frame[..frame.len() - MAC_LEN].to_vec();
        forged[33] = 0;
        let mut m = mac(secret);
        m.update(&forged);
        forged.extend_from_slice(&m.finalize().into_bytes());
        assert_eq!(Message::decode(&forged, secret), None, "a key with no key");
        let key = Message {
            target: Some(Target::Key("k".into())),
            ..d
        };
        let mut forged = key.encode(secret).unwrap()[..HEAD + 1].to_vec();
        forged[33] = DIGEST;
        let mut m = mac(secret);
        m.update(&forged);
        forged.extend_from_slice(&m.finalize().into_bytes());
        assert_eq!(
            Message::decode(&forged, secret),
            None,
            "a digest with a target"
        );
    }

    #[test]
    fn a_target_too_long_is_refused_whole_and_the_longest_goes_whole() {
        let secret = b"a secret of 16 bytes";
        let m = |key: String| Message {
            node: 1,
            incarnation: 1,
            seq: 1,
            version: 1,
            target: Some(Target::Key(key)),
        };
        let longest = m("k".repeat(MAX_TARGET));
        let frame = longest.encode(secret).unwrap();
        assert_eq!(Message::decode(&frame, secret), Some(longest));
        let e = m("k".repeat(MAX_TARGET + 1)).encode(secret).unwrap_err();
        assert_eq!(
            (e.target_len(), TargetTooLong::max()),
            (MAX_TARGET + 1, MAX_TARGET)
        );
    }
}
