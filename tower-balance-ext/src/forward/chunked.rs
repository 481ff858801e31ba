//! Where a chunked body ends.

/// A scanner of chunked framing: finds where the message ends without changing it.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
    size: u64,
    /// Bytes of the current size line's extension or trailer line.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    SizeWhitespace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// The longest chunk extension or trailer line.
const MAX_CHUNK_LINE: usize = 8 * 1024;

impl Chunked {
    /// Scans `buf`; how many of its bytes belong to the message (all of them unless it
    /// ends inside `buf`).
    pub(super) fn scan(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < buf.len() && self.state != ChunkState::Done {
            if self.state == ChunkState::Data {
                let take = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit))
                        .ok_or("chunk size overflows")?;
                    self.line += 1;
                    if self.line > 64 {
                        return Err("chunk size line over the limit");
                    }
                    ChunkState::Size
                }
                (ChunkState::Size, _) if self.line == 0 => return Err("chunk size missing"),
                (ChunkState::Size | ChunkState::SizeWhitespace, b' ' | b'\t') => {
                    ChunkState::SizeWhitespace
                }
                (ChunkState::Size | ChunkState::SizeWhitespace, b';') => {
                    self.line = 0;
                    ChunkState::Extension
                }
                (ChunkState::Size | ChunkState::SizeWhitespace | ChunkState::Extension, b'\r') => {
                    ChunkState::SizeLf
                }
                (ChunkState::Extension, b'\n') => return Err("bare LF in a chunk extension"),
                (ChunkState::Extension, _) => {
                    self.count_line()?;
                    ChunkState::Extension
                }
                (ChunkState::SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    }
                }
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => ChunkState::Size,
                (ChunkState::TrailerStart, b'\r') => ChunkState::EndLf,
                (ChunkState::Trailer, b'\r') => ChunkState::TrailerLf,
                (ChunkState::TrailerStart | ChunkState::Trailer, b'\n') => {
                    return Err("bare LF in a trailer")
                }
                (ChunkState::TrailerStart | ChunkState::Trailer, _) => {
                    self.count_line()?;
                    ChunkState::Trailer
                }
                (ChunkState::TrailerLf, b'\n') => {
                    self.line = 0;
                    ChunkState::TrailerStart
                }
                (ChunkState::EndLf, b'\n') => ChunkState::Done,
                _ => return Err("malformed chunked body"),
            };
        }
        Ok(i)
    }

    pub(super) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// One more byte of a chunk extension or a trailer line, within the limit.
    fn count_line(&mut self) -> Result<(), &'static str> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err("chunk extension or trailer line over the limit");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(parts: &[&[u8]]) -> Result<(usize, bool), &'static str> {
        let mut c = Chunked::default();
        let mut total = 0;
        for p in parts {
            total += c.scan(p)?;
            if c.done() {
                break;
            }
        }
        Ok((total, c.done()))
    }

    #[test]
    fn chunked_scanner_finds_the_end_across_any_split() {
        let msg: &[u8] =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..=msg.len() {
            let (a, b) = msg.split_at(split);
            assert_eq!(
                scan_all(&[a, b, b"GET /next"]),
                Ok((msg.len(), true)),
                "split {split}"
            );
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(scan_all(&bytes), Ok((msg.len(), true)));
        // Bytes after the end are not the message's.
        let mut c = Chunked::default();
        assert_eq!(c.scan(b"0\r\n\r\nHTTP/1.1"), Ok(5));
        assert!(c.done());
    }

    proptest::proptest! {
        /// Any chunked body (chunk sizes in any case and with leading zeros, extensions,
        /// trailers), followed by anything, split anywhere: the scanner ends exactly at
        /// the body's end.
        #[test]
        fn chunked_scanner_ends_exactly_at_the_end(
            chunks in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 1..300), proptest::bool::ANY, 0usize..3),
                0..8,
            ),
            trailers in proptest::collection::vec("[a-z]{1,8}: [a-z0-9]{0,8}", 0..3),
            suffix in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            cuts in proptest::collection::vec(0usize..4000, 0..6),
        ) {
            let mut body = Vec::new();
            for (data, upper, zeros) in &chunks {
                let size = format!("{}{:x}", "0".repeat(*zeros), data.len());
                body.extend_from_slice(if *upper { size.to_uppercase() } else { size }.as_bytes());
                if *upper {
                    body.extend_from_slice(b" ;name=\"v\"");
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for t in &trailers {
                body.extend_from_slice(t.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(&suffix);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.push(0);
            cuts.push(body.len());
            cuts.sort_unstable();
            let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &body[w[0]..w[1]]).collect();
            proptest::prop_assert_eq!(scan_all(&parts), Ok((end, true)));
        }

        /// Bytes of any kind never make the scanner panic or claim more than it was given.
        #[test]
        fn chunked_scanner_takes_no_more_than_it_is_given(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..500),
        ) {
            let mut c = Chunked::default();
            if let Ok(n) = c.scan(&bytes) {
                proptest::prop_assert!(n <= bytes.len());
            }
        }
    }

    #[test]
    fn chunked_scanner_refuses_malformed_framing() {
        for bad in [
            &b"z\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nx\n",
        ] {
            assert!(
                scan_all(&[bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [&b"1;"[..], &vec![b'a'; MAX_CHUNK_LINE + 1]].concat();
        assert!(scan_all(&[&long]).is_err());
    }
}
