//! How the HTTP cache stores a response: head, body, freshness and the request header
//! values it varies on; and the index record of a URL whose responses vary.
//!
//! ```text
//! entry:  [FORMAT_ENTRY] status:u16 response_time:u64 initial_age:u64 lifetime:u64
//!         flags:u8 (must-revalidate, no-cache, validator) swr:u64 sie:u64
//!         vary_count:u16 { name_len:u16 name present:u8 [value_len:u32 value] }
//!         header_count:u16 { name_len:u16 name value_len:u32 value }
//!         body_len:u64 body
//! index:  [FORMAT_INDEX] epoch:u64 name_count:u16 { name_len:u16 name }
//!         variant_count:u16 { variant_hash:u64 }   (oldest first)
//! ```
//!
//! An index of the earlier format (`0xE2`, without the variant list) still decodes, as
//! an index that lists no variants.
//!
//! Every length is checked on decode: stored bytes that do not parse are a miss, never a
//! panic.

use ::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};

use super::body::DiskBody;
use super::policy::Freshness;

const FORMAT_ENTRY: u8 = 0xE1;
const FORMAT_INDEX_UNLISTED: u8 = 0xE2;
const FORMAT_INDEX: u8 = 0xE3;

/// A stored response.
#[derive(Debug, Clone)]
pub(crate) struct HttpEntry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) freshness: Freshness,
    /// The request header values this response was selected by (`Vary`).
    pub(crate) vary: Vec<(HeaderName, Option<Vec<u8>>)>,
    /// The body, when the disk tier holds it in parts (a response too large for the
    /// memory tier): then `body` is empty, and the body is read from disk as it is sent.
    /// Boxed: an entry on the memory tier's hit path stays small.
    pub(crate) on_disk: Option<Box<DiskBody>>,
}

impl HttpEntry {
    /// The length of the body, wherever it is held.
    pub(crate) fn body_len(&self) -> u64 {
        match &self.on_disk {
            Some(d) => d.len,
            None => self.body.len() as u64,
        }
    }
}

/// What a key holds.
#[derive(Debug)]
pub(crate) enum Record {
    Entry(HttpEntry),
    /// The responses of this URL vary on these request headers; each lives under a
    /// secondary key made of the epoch and the request's values.
    Index {
        epoch: u64,
        names: Vec<HeaderName>,
    },
}

pub(crate) fn encode_entry(e: &HttpEntry) -> Option<Bytes> {
    if e.on_disk.is_some() {
        // Its body is not here: see `encode_head`.
        return None;
    }
    let mut out = encode_head(e, e.body.len() as u64, e.body.len())?;
    out.put_slice(&e.body);
    Some(out.freeze())
}

/// The stored form of `e` up to its body, for a body of `body_len` bytes that follows it
/// (with room for `room` more bytes).
pub(crate) fn encode_head(e: &HttpEntry, body_len: u64, room: usize) -> Option<BytesMut> {
    let mut out = BytesMut::with_capacity(128 + room);
    out.put_u8(FORMAT_ENTRY);
    out.put_u16_le(e.status.as_u16());
    let f = &e.freshness;
    out.put_u64_le(f.response_time);
    out.put_u64_le(f.initial_age);
    out.put_u64_le(f.lifetime);
    out.put_u8(
        u8::from(f.must_revalidate) | u8::from(f.no_cache) << 1 | u8::from(f.validator) << 2,
    );
    out.put_u64_le(f.stale_while_revalidate);
    out.put_u64_le(f.stale_if_error);
    out.put_u16_le(u16::try_from(e.vary.len()).ok()?);
    for (name, value) in &e.vary {
        put_short(&mut out, name.as_str().as_bytes())?;
        match value {
            Some(v) => {
                out.put_u8(1);
                out.put_u32_le(u32::try_from(v.len()).ok()?);
                out.put_slice(v);
            }
            None => out.put_u8(0),
        }
    }
    out.put_u16_le(u16::try_from(e.headers.len()).ok()?);
    for (name, value) in &e.headers {
        put_short(&mut out, name.as_str().as_bytes())?;
        out.put_u32_le(u32::try_from(value.len()).ok()?);
        out.put_slice(value.as_bytes());
    }
    out.put_u64_le(body_len);
    Some(out)
}

/// An index record: the epoch, the names the URL's responses vary on, and the hashes of
/// the variants stored under it, oldest first.
pub(crate) fn encode_index(epoch: u64, names: &[HeaderName], variants: &[u64]) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(16 + names.len() * 16 + variants.len() * 8);
    out.put_u8(FORMAT_INDEX);
    out.put_u64_le(epoch);
    out.put_u16_le(u16::try_from(names.len()).ok()?);
    for n in names {
        put_short(&mut out, n.as_str().as_bytes())?;
    }
    out.put_u16_le(u16::try_from(variants.len()).ok()?);
    for v in variants {
        out.put_u64_le(*v);
    }
    Some(out.freeze())
}

/// The epoch and the listed variants of a stored index record; `None` for anything else.
pub(crate) fn index_variants(stored: &Bytes) -> Option<(u64, Vec<u64>)> {
    let mut r = Reader { b: stored };
    let format = r.u8()?;
    if format != FORMAT_INDEX && format != FORMAT_INDEX_UNLISTED {
        return None;
    }
    let epoch = r.u64()?;
    for _ in 0..r.u16()? {
        let n = r.u16()?;
        r.take(n)?;
    }
    if format == FORMAT_INDEX_UNLISTED {
        return Some((epoch, Vec::new()));
    }
    let n = r.u16()?;
    let mut variants = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        variants.push(r.u64()?);
    }
    Some((epoch, variants))
}

fn put_short(out: &mut BytesMut, b: &[u8]) -> Option<()> {
    out.put_u16_le(u16::try_from(b.len()).ok()?);
    out.put_slice(b);
    Some(())
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<usize> {
        let s = self.take(2)?;
        Some(u16::from_le_bytes([s[0], s[1]]) as usize)
    }
    fn u32(&mut self) -> Option<usize> {
        let s = self.take(4)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(s);
        Some(u64::from_le_bytes(a))
    }
    fn name(&mut self) -> Option<HeaderName> {
        let n = self.u16()?;
        HeaderName::from_bytes(self.take(n)?).ok()
    }
}

pub(crate) fn decode(stored: &Bytes) -> Option<Record> {
    let mut r = Reader { b: stored };
    match r.u8()? {
        format @ (FORMAT_INDEX | FORMAT_INDEX_UNLISTED) => {
            let epoch = r.u64()?;
            let n = r.u16()?;
            let mut names = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                names.push(r.name()?);
            }
            if format == FORMAT_INDEX {
                // The variant list: read by `index_variants`, checked here.
                let n = r.u16()?;
                r.take(n.checked_mul(8)?)?;
            }
            Some(Record::Index { epoch, names })
        }
        FORMAT_ENTRY => {
            let (mut entry, at, len) = decode_head(stored)?;
            if (stored.len() - at) as u64 != len {
                return None;
            }
            entry.body = stored.slice(at..);
            Some(Record::Entry(entry))
        }
        _ => None,
    }
}

/// The head of a stored entry (`stored` may hold only the start of it: enough for the
/// head): the entry with an empty body, where its body starts in the record, and the
/// body's length. `None` for anything that is not an entry, or a head cut short.
pub(crate) fn decode_head(stored: &Bytes) -> Option<(HttpEntry, usize, u64)> {
    let mut r = Reader { b: stored };
    if r.u8()? != FORMAT_ENTRY {
        return None;
    }
    let status = StatusCode::from_u16(r.u16()? as u16).ok()?;
    let (response_time, initial_age, lifetime) = (r.u64()?, r.u64()?, r.u64()?);
    let flags = r.u8()?;
    let freshness = Freshness {
        response_time,
        initial_age,
        lifetime,
        must_revalidate: flags & 1 != 0,
        no_cache: flags & 2 != 0,
        validator: flags & 4 != 0,
        stale_while_revalidate: r.u64()?,
        stale_if_error: r.u64()?,
    };
    let n = r.u16()?;
    let mut vary = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        let name = r.name()?;
        let value = match r.u8()? {
            0 => None,
            _ => {
                let len = r.u32()?;
                Some(r.take(len)?.to_vec())
            }
        };
        vary.push((name, value));
    }
    let n = r.u16()?;
    // Room for the fields a hit adds (`Age`, the status header).
    let mut headers = HeaderMap::with_capacity(n.min(64) + 2);
    for _ in 0..n {
        let name = r.name()?;
        let len = r.u32()?;
        let start = stored.len() - r.b.len();
        r.take(len)?;
        // A view of the stored bytes, not a copy; checked as `from_bytes` checks.
        let value = HeaderValue::from_maybe_shared(stored.slice(start..start + len)).ok()?;
        headers.try_append(name, value).ok()?;
    }
    let len = r.u64()?;
    let at = stored.len() - r.b.len();
    Some((
        HttpEntry {
            status,
            headers,
            body: Bytes::new(),
            freshness,
            vary,
            on_disk: None,
        },
        at,
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_indexes_round_trip_and_cut_records_never_decode() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let e = HttpEntry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from("body"),
            freshness: Freshness {
                response_time: 5,
                initial_age: 1,
                lifetime: 60,
                must_revalidate: true,
                no_cache: false,
                validator: true,
                stale_while_revalidate: 2,
                stale_if_error: 3,
            },
            vary: vec![
                (
                    HeaderName::from_static("accept-encoding"),
                    Some(b"gzip".to_vec()),
                ),
                (HeaderName::from_static("accept-language"), None),
            ],
            on_disk: None,
        };
        let bytes = encode_entry(&e).unwrap();
        let Some(Record::Entry(d)) = decode(&bytes) else {
            panic!("not an entry")
        };
        assert_eq!(
            (d.status, &d.body, d.freshness),
            (e.status, &e.body, e.freshness)
        );
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.vary, e.vary);
        // A hit's head points into the stored bytes, and has room for the fields a hit
        // adds without growing.
        let stored = bytes.as_ptr_range();
        for v in d.headers.values() {
            assert!(stored.contains(&v.as_bytes().as_ptr()), "a copied value");
        }
        assert!(d.headers.capacity() >= d.headers.len() + 2);
        let idx = encode_index(7, &[HeaderName::from_static("accept")], &[3, 1]).unwrap();
        assert!(matches!(decode(&idx), Some(Record::Index { epoch: 7, .. })));
        assert_eq!(index_variants(&idx), Some((7, vec![3, 1])));
        for cut in 0..idx.len() {
            assert!(decode(&idx.slice(..cut)).is_none(), "index cut at {cut}");
            assert!(
                index_variants(&idx.slice(..cut)).is_none(),
                "index cut at {cut}"
            );
        }
        // An index of the earlier format: no variant list.
        let mut old = vec![FORMAT_INDEX_UNLISTED];
        old.extend_from_slice(&9u64.to_le_bytes());
        old.extend_from_slice(&1u16.to_le_bytes());
        old.extend_from_slice(&6u16.to_le_bytes());
        old.extend_from_slice(b"accept");
        let old = Bytes::from(old);
        assert!(matches!(decode(&old), Some(Record::Index { epoch: 9, .. })));
        assert_eq!(index_variants(&old), Some((9, Vec::new())));
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes.slice(..cut)).is_none(),
                "a record cut at {cut} must not decode"
            );
        }
        // Arbitrary bytes: the property test in `headers` (`stored_records_never_panic`).
    }
}
