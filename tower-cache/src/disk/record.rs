//! The record format: a versioned, checksummed header, the tags, the payload.
//!
//! Two forms are written. The whole form (format 2) checksums the record as one and may
//! compress the payload. The addressable form (format 3), for values at or above
//! [`DiskTierBuilder::addressable_threshold`](super::DiskTierBuilder::addressable_threshold),
//! keeps the payload as it is and checksums it in blocks of [`BLOCK`] bytes, so any
//! byte range of the value can be checked and copied out without reading the rest.

use bytes::Bytes;

use crate::entry::{EntryMeta, Tags};

// === record format ===
//
// byte 0      format version (2)
// byte 1      flags (bit 0: payload compressed with snap raw format)
// bytes 2..6  CRC-32 (IEEE) of bytes 0..2 and 6..end: the whole record but itself
//             (format 1 left bytes 0..2 out; its records read as unknown and are dropped)
// bytes 6..14 expiry, Unix milliseconds, little endian
// bytes 14..22 version of the write
// bytes 22..30 write sequence (key of the order index)
// bytes 30..34 uncompressed payload length
// bytes 34..36 tag count, then per tag: u16 length + UTF-8 bytes
// rest        payload
//
// Format 3 (addressable) has the same 36-byte header with format 3 and flags 0, but its
// CRC covers only bytes 0..2 and 6..payload start (the head: header, tags, block table);
// after the tags comes a table of one CRC-32 per block of BLOCK bytes of the payload,
// then the payload, never compressed. With flag bit 1 set, the tags are followed by the
// record's lineage (id, at, from: u64 each, little endian; see `Lineage`), under the
// head's checksum; without it the lineage is (the record's own sequence number, 0, 0).

pub(super) const FORMAT_V2: u8 = 2;
pub(super) const FORMAT_V3: u8 = 3;
/// Bytes of payload per checksum of an addressable record.
pub(crate) const BLOCK: usize = 64 << 10;
pub(super) const FLAG_SNAPPY: u8 = 1;
/// Format 3: the tags are followed by the record's [`Lineage`] (24 bytes).
pub(super) const FLAG_LINEAGE: u8 = 2;
pub(super) const HEADER: usize = 36;

pub(super) struct Header {
    pub(super) expires_ms: u64,
    pub(super) seq: u64,
    pub(super) logical: u64,
}

#[cfg(test)]
pub(super) fn encode_record(
    value: &[u8],
    expires_ms: u64,
    meta: &EntryMeta,
    seq: u64,
    compress_threshold: usize,
    addressable_threshold: usize,
) -> Vec<u8> {
    encode_record_of(
        &[value],
        None,
        expires_ms,
        meta,
        seq,
        compress_threshold,
        addressable_threshold,
    )
}

/// [`encode_record`] of the value made of `parts` one after the other, without joining
/// them first when the record is addressable (the usual case of several parts: a new
/// head, the body of a large record kept behind it, and bytes added after it).
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_record_of(
    parts: &[&[u8]],
    lineage: Option<Lineage>,
    expires_ms: u64,
    meta: &EntryMeta,
    seq: u64,
    compress_threshold: usize,
    addressable_threshold: usize,
) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len >= addressable_threshold {
        return encode_addressable(parts, len, lineage, expires_ms, meta, seq);
    }
    let joined;
    let value = match parts {
        [one] => *one,
        _ => {
            joined = parts.concat();
            &joined[..]
        }
    };
    let compressed = if value.len() >= compress_threshold {
        snap::raw::Encoder::new()
            .compress_vec(value)
            .ok()
            .filter(|c| c.len() < value.len())
    } else {
        None
    };
    let payload: &[u8] = compressed.as_deref().unwrap_or(value);
    let mut out = Vec::with_capacity(HEADER + meta.tags.encoded_len() + payload.len());
    out.push(FORMAT_V2);
    out.push(if compressed.is_some() { FLAG_SNAPPY } else { 0 });
    put_head(&mut out, value.len(), expires_ms, meta, seq);
    out.extend_from_slice(payload);
    let crc = checksum(&out);
    out[2..6].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The header after its first two bytes (checksum left 0), then the tags.
fn put_head(out: &mut Vec<u8>, logical: usize, expires_ms: u64, meta: &EntryMeta, seq: u64) {
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(logical as u32).to_le_bytes());
    out.extend_from_slice(&(meta.tags.len() as u16).to_le_bytes());
    for tag in meta.tags.iter() {
        let tag = &tag.as_bytes()[..tag.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        out.extend_from_slice(tag);
    }
}

/// An addressable record of the value made of `parts` (`len` bytes in all): the
/// record's head (header, tags, lineage, one CRC-32 per block of the payload, under the
/// header's checksum), then the payload as it is.
fn encode_addressable(
    parts: &[&[u8]],
    len: usize,
    lineage: Option<Lineage>,
    expires_ms: u64,
    meta: &EntryMeta,
    seq: u64,
) -> Vec<u8> {
    let blocks = len.div_ceil(BLOCK);
    let mut out = Vec::with_capacity(HEADER + meta.tags.encoded_len() + 24 + blocks * 4 + len);
    out.push(FORMAT_V3);
    out.push(if lineage.is_some() { FLAG_LINEAGE } else { 0 });
    put_head(&mut out, len, expires_ms, meta, seq);
    if let Some(l) = lineage {
        out.extend_from_slice(&l.id.to_le_bytes());
        out.extend_from_slice(&(l.at as u64).to_le_bytes());
        out.extend_from_slice(&l.from.to_le_bytes());
    }
    // One CRC per block, the blocks running across the parts.
    let mut h = crc32fast::Hasher::new();
    let mut in_block = 0;
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            let n = (BLOCK - in_block).min(rest.len());
            h.update(&rest[..n]);
            rest = &rest[n..];
            in_block += n;
            if in_block == BLOCK {
                out.extend_from_slice(&std::mem::take(&mut h).finalize().to_le_bytes());
                in_block = 0;
            }
        }
    }
    if in_block > 0 {
        out.extend_from_slice(&h.finalize().to_le_bytes());
    }
    let crc = checksum(&out);
    out[2..6].copy_from_slice(&crc.to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// An addressable record of `head` followed by `len` bytes that `fill` appends to the
/// record it is given (from a file, say), built in place: the value is copied once, into
/// the record. Fails if `fill` does, or appends another number of bytes.
pub(super) fn encode_addressable_filled(
    head: &[u8],
    len: usize,
    fill: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    expires_ms: u64,
    meta: &EntryMeta,
    seq: u64,
) -> std::io::Result<Vec<u8>> {
    let total = head.len() + len;
    let blocks = total.div_ceil(BLOCK);
    let mut out = Vec::new();
    out.try_reserve_exact(HEADER + meta.tags.encoded_len() + blocks * 4 + total)
        .map_err(std::io::Error::other)?;
    out.push(FORMAT_V3);
    out.push(0);
    put_head(&mut out, total, expires_ms, meta, seq);
    let table = out.len();
    out.resize(table + blocks * 4, 0);
    let payload = out.len();
    out.extend_from_slice(head);
    fill(&mut out)?;
    if out.len() - payload != total {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the value is not the length it was said to be",
        ));
    }
    for i in 0..blocks {
        let start = payload + i * BLOCK;
        let crc = crc32fast::hash(&out[start..(start + BLOCK).min(out.len())]);
        out[table + i * 4..table + i * 4 + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = checksum(&out[..payload]);
    out[2..6].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The head of an addressable record, checked: where its payload starts in the record
/// and how long the payload is. Reads the header, tags and block table, not the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// Offset of the block table in the record.
    pub(super) table: usize,
    /// Offset of the payload in the record.
    pub(super) payload: usize,
    /// Length of the payload (the value).
    pub(super) len: usize,
    /// Where the payload's bytes come from.
    pub(super) lineage: Lineage,
}

/// Where the end of an addressable record's payload comes from, so that a reader of a
/// record that was rewritten with its end kept (a new head in front of a large body) can
/// find the bytes it was reading in the new record: payload bytes `at..` are bytes
/// `from..` of the value first written by the write with sequence number `id`, whose
/// records all share the id. A record written whole has (its own sequence number, 0, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lineage {
    pub(super) id: u64,
    pub(super) at: usize,
    pub(super) from: u64,
}

impl Lineage {
    /// Where byte `p` of the payload of a record of this lineage is in the payload of a
    /// record of lineage `now`; `None` if it is not among the bytes both share.
    pub(super) fn map(self, p: usize, now: Lineage) -> Option<usize> {
        if self.id != now.id {
            return None;
        }
        let y = (p.checked_sub(self.at)? as u64).checked_add(self.from)?;
        let q = y.checked_sub(now.from)?;
        usize::try_from(q).ok()?.checked_add(now.at)
    }
}

/// Checks the head of an addressable record (its checksum, tags and block table) and
/// returns its layout; the payload is checked block by block when it is read.
pub(super) fn addressable_layout(b: &[u8]) -> Result<Layout, &'static str> {
    if b.len() < HEADER || b[0] != FORMAT_V3 {
        return Err("not an addressable record");
    }
    if b[1] & !FLAG_LINEAGE != 0 {
        return Err("unknown record flags");
    }
    let len = u32::from_le_bytes([b[30], b[31], b[32], b[33]]) as usize;
    let ntags = u16_at(b, 34).ok_or("truncated tags")?;
    let mut at = HEADER;
    for _ in 0..ntags {
        let n = u16_at(b, at).ok_or("truncated tags")?;
        b.get(at + 2..at + 2 + n).ok_or("truncated tags")?;
        at += 2 + n;
    }
    let lineage = if b[1] & FLAG_LINEAGE != 0 {
        b.get(at..at + 24).ok_or("truncated lineage")?;
        let l = Lineage {
            id: u64_at(b, at),
            at: usize::try_from(u64_at(b, at + 8)).map_err(|_| "lineage out of range")?,
            from: u64_at(b, at + 16),
        };
        at += 24;
        l
    } else {
        Lineage {
            id: u64_at(b, 22),
            at: 0,
            from: 0,
        }
    };
    let payload = len
        .div_ceil(BLOCK)
        .checked_mul(4)
        .and_then(|t| t.checked_add(at))
        .filter(|&p| p <= b.len())
        .ok_or("truncated block table")?;
    let crc = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..2]);
    h.update(&b[6..payload]);
    if h.finalize() != crc {
        return Err("checksum mismatch");
    }
    if b.len() - payload != len {
        return Err("length mismatch");
    }
    if lineage.at > len {
        return Err("lineage out of range");
    }
    Ok(Layout {
        table: at,
        payload,
        len,
        lineage,
    })
}

/// Bytes `from..from + len` of an addressable record's payload, each block they touch
/// checked against its CRC first; an error if the range is outside the payload.
pub(super) fn addressable_slice(
    b: &[u8],
    layout: Layout,
    from: usize,
    len: usize,
) -> Result<&[u8], &'static str> {
    let end = from
        .checked_add(len)
        .filter(|&e| e <= layout.len)
        .ok_or("range outside the value")?;
    let payload = &b[layout.payload..];
    if len == 0 {
        return Ok(&payload[from..from]);
    }
    for block in from / BLOCK..end.div_ceil(BLOCK) {
        let at = layout.table + block * 4;
        let want = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let start = block * BLOCK;
        let bytes = &payload[start..(start + BLOCK).min(layout.len)];
        if crc32fast::hash(bytes) != want {
            return Err("block checksum mismatch");
        }
    }
    Ok(&payload[from..end])
}

/// Bytes of a stored addressable record that a new write of its key keeps: its value's
/// bytes `from..from + len`, taken only while the key still holds the record written with
/// sequence number `seq` (the one they were read from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(super) seq: u64,
    pub(super) from: usize,
    pub(super) len: usize,
}

impl Tail {
    /// The kept bytes of `record` (the raw record under the key now), their blocks
    /// checked, and the lineage of a new record that puts them after `head` bytes.
    pub(super) fn of(self, record: &[u8], head: usize) -> Kept<'_> {
        if decode_header(record).is_none_or(|h| h.seq != self.seq) {
            return Kept::Gone;
        }
        let layout = match addressable_layout(record) {
            Ok(layout) => layout,
            Err(why) => return Kept::Damaged(why),
        };
        if self.from.checked_add(self.len) != Some(layout.len) {
            // Not the end of the value: nothing this build asks for.
            return Kept::Gone;
        }
        let kept = match addressable_slice(record, layout, self.from, self.len) {
            Ok(kept) => kept,
            Err(why) => return Kept::Damaged(why),
        };
        let old = layout.lineage;
        // The kept bytes that are of the old record's lineage keep it: all of them when
        // they start within it, else those from where it starts (bytes put in front of
        // it earlier stay, outside it). Offsets past what a lineage can say start a new
        // one.
        let lineage = match self.from.checked_sub(old.at) {
            Some(d) => old.from.checked_add(d as u64).map(|from| Lineage {
                id: old.id,
                at: head,
                from,
            }),
            None => head.checked_add(old.at - self.from).map(|at| Lineage {
                id: old.id,
                at,
                from: old.from,
            }),
        };
        Kept::Bytes(kept, lineage)
    }
}

/// What a [`Tail`] finds in the record its key holds.
pub(super) enum Kept<'a> {
    /// The kept bytes, and the new record's lineage.
    Bytes(&'a [u8], Option<Lineage>),
    /// Another record (or none of the kind): nothing to keep.
    Gone,
    /// The record is damaged: to be dropped and counted.
    Damaged(&'static str),
}

/// CRC-32 of a record without its own checksum field.
fn checksum(record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&record[..2]);
    h.update(&record[6..]);
    h.finalize()
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize)
}

/// Reads only the header; used by the writer to find index rows.
pub(super) fn decode_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER || !is_known(b[0]) {
        return None;
    }
    Some(Header {
        expires_ms: u64_at(b, 6),
        seq: u64_at(b, 22),
        logical: u32::from_le_bytes([b[30], b[31], b[32], b[33]]) as u64,
    })
}

/// The version of the write a record holds, read from its header alone.
pub(super) fn record_version(b: &[u8]) -> Option<u64> {
    (b.len() >= HEADER && is_known(b[0])).then(|| u64_at(b, 14))
}

/// Whether a record carries `tag`, read from its header and tag list alone (no checksum,
/// no payload: a damaged record is caught when it is read).
pub(super) fn record_has_tag(b: &[u8], tag: &str) -> bool {
    if b.len() < HEADER || !is_known(b[0]) {
        return false;
    }
    let Some(ntags) = u16_at(b, 34) else {
        return false;
    };
    let mut at = HEADER;
    for _ in 0..ntags {
        let Some(len) = u16_at(b, at) else {
            return false;
        };
        match b.get(at + 2..at + 2 + len) {
            Some(t) if t == tag.as_bytes() => return true,
            Some(_) => at += 2 + len,
            None => return false,
        }
    }
    false
}

/// Whether `format` is a record format this build reads.
fn is_known(format: u8) -> bool {
    format == FORMAT_V2 || format == FORMAT_V3
}

/// Decodes a whole record, verifying its checksum (every block's, for an addressable
/// one).
pub(super) fn decode_record(b: &[u8]) -> Result<(u64, Bytes, EntryMeta), &'static str> {
    if b.len() < HEADER {
        return Err("record shorter than its header");
    }
    if b[0] == FORMAT_V3 {
        let layout = addressable_layout(b)?;
        let value = Bytes::copy_from_slice(addressable_slice(b, layout, 0, layout.len)?);
        return Ok((u64_at(b, 6), value, decode_meta(b)?));
    }
    if b[0] != FORMAT_V2 {
        return Err("unknown record format version");
    }
    let crc = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    if checksum(b) != crc {
        return Err("checksum mismatch");
    }
    let expires_ms = u64_at(b, 6);
    let version = u64_at(b, 14);
    let logical = u32::from_le_bytes([b[30], b[31], b[32], b[33]]) as usize;
    let ntags = u16_at(b, 34).ok_or("truncated tags")?;
    let mut at = HEADER;
    let mut tags = Vec::with_capacity(ntags);
    for _ in 0..ntags {
        let len = u16_at(b, at).ok_or("truncated tags")?;
        let tag = b.get(at + 2..at + 2 + len).ok_or("truncated tags")?;
        tags.push(std::str::from_utf8(tag).map_err(|_| "tag is not UTF-8")?);
        at += 2 + len;
    }
    let payload = &b[at..];
    if b[1] & !FLAG_SNAPPY != 0 {
        return Err("unknown record flags");
    }
    let value = if b[1] & FLAG_SNAPPY != 0 {
        if snap::raw::decompress_len(payload).ok() != Some(logical) {
            return Err("compressed length mismatch");
        }
        let v = snap::raw::Decoder::new()
            .decompress_vec(payload)
            .map_err(|_| "bad compressed payload")?;
        if v.len() != logical {
            return Err("decompressed length mismatch");
        }
        Bytes::from(v)
    } else if payload.len() != logical {
        return Err("length mismatch");
    } else {
        Bytes::copy_from_slice(payload)
    };
    Ok((
        expires_ms,
        value,
        EntryMeta {
            version,
            tags: tags.into_iter().collect::<Tags>(),
        },
    ))
}

/// The version and tags in a record's header (checked by the caller).
pub(super) fn decode_meta(b: &[u8]) -> Result<EntryMeta, &'static str> {
    let ntags = u16_at(b, 34).ok_or("truncated tags")?;
    let mut at = HEADER;
    let mut tags = Vec::with_capacity(ntags);
    for _ in 0..ntags {
        let len = u16_at(b, at).ok_or("truncated tags")?;
        let tag = b.get(at + 2..at + 2 + len).ok_or("truncated tags")?;
        tags.push(std::str::from_utf8(tag).map_err(|_| "tag is not UTF-8")?);
        at += 2 + len;
    }
    Ok(EntryMeta {
        version: u64_at(b, 14),
        tags: tags.into_iter().collect::<Tags>(),
    })
}

pub(super) fn expiry_key(expires_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_with_and_without_compression() {
        let meta = EntryMeta {
            version: 7,
            tags: ["a", "bb"].into_iter().collect(),
        };
        for (value, threshold) in [(vec![b'x'; 4096], 1024), (vec![b'x'; 10], 1024)] {
            let rec = encode_record(&value, 99, &meta, 3, threshold, usize::MAX);
            let (exp, v, m) = decode_record(&rec).unwrap();
            assert_eq!((exp, &v[..], &m), (99, &value[..], &meta));
            assert_eq!(decode_header(&rec).unwrap().seq, 3);
        }
        let compressed = encode_record(&[b'x'; 4096], 1, &meta, 1, 1024, usize::MAX);
        assert!(compressed.len() < 1024, "4 KiB of one byte compresses");
    }

    #[test]
    fn corrupt_records_are_detected() {
        let rec = encode_record(
            b"hello world",
            5,
            &EntryMeta::default(),
            1,
            1024,
            usize::MAX,
        );
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x01;
            assert!(
                decode_record(&bad).is_err(),
                "flip at byte {i} must be caught"
            );
        }
        // A wrong logical length under a valid checksum (a writer bug, not a bit flip).
        let mut wrong_len = rec.clone();
        wrong_len[30] ^= 0x01;
        let crc = checksum(&wrong_len);
        wrong_len[2..6].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_record(&wrong_len).unwrap_err(), "length mismatch");
        let mut future = rec.clone();
        future[0] = 4;
        assert_eq!(
            decode_record(&future).unwrap_err(),
            "unknown record format version"
        );
        assert!(decode_record(&rec[..10]).is_err());
    }

    #[test]
    fn addressable_records_read_whole_or_by_range_and_catch_damage() {
        let meta = EntryMeta {
            version: 4,
            tags: ["t"].into_iter().collect(),
        };
        let value: Vec<u8> = (0..3 * BLOCK + 17).map(|i| (i * 7 % 251) as u8).collect();
        let rec = encode_record(&value, 9, &meta, 5, 1024, 1024);
        assert_eq!(rec[0], FORMAT_V3);
        let (exp, v, m) = decode_record(&rec).unwrap();
        assert_eq!((exp, &v[..], &m), (9, &value[..], &meta));
        assert_eq!(decode_header(&rec).unwrap().seq, 5);
        assert_eq!(record_version(&rec), Some(4));
        assert!(record_has_tag(&rec, "t"));
        let layout = addressable_layout(&rec).unwrap();
        assert_eq!(layout.len, value.len());
        for (from, len) in [
            (0, 1),
            (BLOCK - 1, 2),
            (3 * BLOCK, 17),
            (5, 0),
            (0, value.len()),
        ] {
            let got = addressable_slice(&rec, layout, from, len).unwrap();
            assert_eq!(got, &value[from..from + len]);
        }
        assert!(addressable_slice(&rec, layout, value.len(), 1).is_err());
        assert!(addressable_slice(&rec, layout, usize::MAX, 2).is_err());
        // A flipped payload byte fails the reads of its block only.
        let mut bad = rec.clone();
        bad[layout.payload + BLOCK + 3] ^= 1;
        let l = addressable_layout(&bad).unwrap();
        assert!(addressable_slice(&bad, l, BLOCK, 10).is_err());
        assert!(addressable_slice(&bad, l, 0, 10).is_ok());
        assert!(decode_record(&bad).is_err());
        // A flipped head byte (header, tags or block table) fails the layout.
        for at in [1, 7, HEADER + 1, layout.table + 2] {
            let mut bad = rec.clone();
            bad[at] ^= 1;
            assert!(addressable_layout(&bad).is_err(), "flip at {at}");
            assert!(decode_record(&bad).is_err(), "flip at {at}");
        }
        assert!(addressable_layout(&rec[..rec.len() - 1]).is_err());
        // Below the threshold: the whole form, as before.
        assert_eq!(
            encode_record(&value, 9, &meta, 5, 1024, usize::MAX)[0],
            FORMAT_V2
        );
        // A record written with its lineage: a head and a kept tail, whose blocks span
        // both; the lineage is under the head's checksum.
        let lineage = Lineage {
            id: 3,
            at: 100,
            from: 7,
        };
        let (head, tail) = value.split_at(100);
        let rec = encode_record_of(&[head, tail], Some(lineage), 9, &meta, 6, 1024, 1024);
        assert_eq!(rec[1], FLAG_LINEAGE);
        let l = addressable_layout(&rec).unwrap();
        assert_eq!(l.lineage, lineage);
        assert_eq!(
            addressable_slice(&rec, l, 0, value.len()).unwrap(),
            &value[..]
        );
        assert_eq!(decode_record(&rec).unwrap().1, &value[..]);
        for at in [HEADER + 3, HEADER + 3 + 8, HEADER + 3 + 16] {
            let mut bad = rec.clone();
            bad[at] ^= 1;
            assert!(addressable_layout(&bad).is_err(), "lineage flip at {at}");
        }
        for cut in [HEADER + 3, HEADER + 3 + 23] {
            assert!(addressable_layout(&rec[..cut]).is_err(), "cut at {cut}");
        }
        let mut unknown = rec.clone();
        unknown[1] |= 4;
        assert!(addressable_layout(&unknown).is_err(), "unknown flag");
        // Without the flag, a record's lineage is its own write.
        let plain = addressable_layout(&encode_record(&value, 9, &meta, 5, 1024, 1024)).unwrap();
        assert_eq!(
            plain.lineage,
            Lineage {
                id: 5,
                at: 0,
                from: 0
            }
        );
        // Byte 150 of this record is byte 57 of write 3's value: where the lineage says.
        let later = Lineage {
            id: 3,
            at: 10,
            from: 50,
        };
        assert_eq!(lineage.map(150, later), Some(17));
        assert_eq!(lineage.map(99, later), None, "before the kept bytes");
        assert_eq!(
            lineage.map(102, later),
            None,
            "not kept by the later record"
        );
        assert_eq!(
            lineage.map(150, Lineage { id: 4, ..later }),
            None,
            "another write"
        );
        assert_eq!(
            lineage.map(usize::MAX, later),
            Some(usize::MAX - 100 + 7 - 50 + 10)
        );
    }
}
