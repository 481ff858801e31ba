//! Glob patterns over keys: `*` any run of characters, `?` one character.
//!
//! Matching takes time linear in the key: the pattern is cut at its stars into parts
//! (literal characters and `?`); the first part must start the key, the last must end
//! it, and each part between is found at its earliest place after the one before, with
//! the bit-parallel shift-and algorithm (one pass over the key, a bit per pattern
//! character). Taking the earliest place is never wrong, since a star before the next
//! part can take any run. So no character of the key is looked at twice by one part's
//! search, and the work is at most (key length) x (the longest part / 64 + 1) word
//! operations, whatever the pattern; a pattern is at most 1 KiB with at most 16 stars.

use std::collections::HashMap;
use std::fmt;

use crate::error::InvalidateError;

/// The longest pattern accepted, in bytes.
const MAX_PATTERN: usize = 1024;
/// The most `*` a pattern may hold.
const MAX_STARS: usize = 16;

/// A pattern over the bounds: longer than 1 KiB, or with more than 16 `*`; the
/// [`source`](std::error::Error::source) of the [`InvalidateError`] that refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    len: usize,
    stars: usize,
}

impl PatternError {
    /// The pattern's length in bytes.
    pub fn pattern_len(&self) -> usize {
        self.len
    }

    /// The number of `*` in it.
    pub fn stars(&self) -> usize {
        self.stars
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalidation pattern of {} bytes with {} `*`; keep it to {MAX_PATTERN} bytes and {MAX_STARS} `*`",
            self.len, self.stars
        )
    }
}

impl std::error::Error for PatternError {}

/// A checked glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: Box<str>,
    /// The literal start, before the first wildcard: a prefix range scan on disk.
    prefix_len: usize,
    /// The pattern cut at its stars (one more part than stars).
    parts: Vec<Part>,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Glob {}

/// A run of the pattern between stars: characters, `None` for `?`.
#[derive(Debug, Clone)]
struct Part {
    chars: Vec<Option<char>>,
    /// For the shift-and search: per character, the bits of the positions it fills.
    masks: HashMap<char, Vec<u64>>,
    /// The bits of the `?` positions.
    any: Vec<u64>,
}

impl Part {
    fn new(text: &str) -> Self {
        let chars: Vec<Option<char>> = text.chars().map(|c| (c != '?').then_some(c)).collect();
        let words = chars.len().div_ceil(64).max(1);
        let mut masks: HashMap<char, Vec<u64>> = HashMap::new();
        let mut any = vec![0u64; words];
        for (i, c) in chars.iter().enumerate() {
            let slot = match c {
                Some(c) => masks.entry(*c).or_insert_with(|| vec![0; words]),
                None => &mut any,
            };
            slot[i / 64] |= 1 << (i % 64);
        }
        Self { chars, masks, any }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the part matches `key` exactly (same length).
    fn fits(&self, key: &[char], steps: &mut u64) -> bool {
        *steps += key.len() as u64;
        key.len() == self.len()
            && self
                .chars
                .iter()
                .zip(key)
                .all(|(p, k)| p.is_none_or(|p| p == *k))
    }

    /// Where the earliest occurrence of the part in `text` ends (one past its last
    /// character), by shift-and.
    fn find_end(&self, text: &[char], steps: &mut u64) -> Option<usize> {
        let m = self.len();
        if m == 0 {
            return Some(0);
        }
        let words = self.any.len();
        let top = ((m - 1) / 64, 1u64 << ((m - 1) % 64));
        let mut state = vec![0u64; words];
        for (i, c) in text.iter().enumerate() {
            let mask = self.masks.get(c);
            let mut carry = 1u64;
            for (w, s) in state.iter_mut().enumerate() {
                let next_carry = *s >> 63;
                let allowed = self.any[w] | mask.map_or(0, |m| m[w]);
                *s = ((*s << 1) | carry) & allowed;
                carry = next_carry;
            }
            *steps += words as u64;
            if state[top.0] & top.1 != 0 {
                return Some(i + 1);
            }
        }
        None
    }
}

impl Glob {
    /// Checks `pattern`: not empty, at most 1 KiB and 16 `*` (over those, the error's
    /// source is a [`PatternError`]).
    pub fn new(pattern: &str) -> Result<Self, InvalidateError> {
        if pattern.is_empty() {
            return Err(InvalidateError::new(
                "invalidation pattern is empty; give a key or a glob such as `provider:*`",
            ));
        }
        let stars = pattern.matches('*').count();
        if pattern.len() > MAX_PATTERN || stars > MAX_STARS {
            return Err(InvalidateError::with_source(
                "invalidation pattern refused",
                PatternError {
                    len: pattern.len(),
                    stars,
                },
            ));
        }
        let prefix_len = pattern.find(['*', '?']).unwrap_or(pattern.len());
        Ok(Self {
            pattern: pattern.into(),
            prefix_len,
            parts: pattern.split('*').map(Part::new).collect(),
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The literal prefix every matching key starts with.
    pub fn prefix(&self) -> &str {
        &self.pattern[..self.prefix_len]
    }

    /// Whether `key` matches, in time linear in the key (see the module docs).
    pub fn matches(&self, key: &str) -> bool {
        self.matches_counting(key, &mut 0)
    }

    /// [`Self::matches`], adding the word operations it took to `steps`.
    fn matches_counting(&self, key: &str, steps: &mut u64) -> bool {
        let key: Vec<char> = key.chars().collect();
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return key.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            // No star: the whole key, character for character.
            return first.fits(&key, steps);
        };
        if key.len() < first.len() + last.len() {
            return false;
        }
        let (head, tail) = (first.len(), key.len() - last.len());
        if !first.fits(&key[..head], steps) || !last.fits(&key[tail..], steps) {
            return false;
        }
        let mut at = head;
        for part in middle {
            match part.find_end(&key[at..tail], steps) {
                Some(end) => at += end,
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        let g = Glob::new("provider:*").unwrap();
        assert_eq!(g.prefix(), "provider:");
        assert!(g.matches("provider:") && g.matches("provider:7:rates"));
        assert!(!g.matches("providers:1") && !g.matches("user:provider:1"));
        let g = Glob::new("user:?:*:x").unwrap();
        assert!(g.matches("user:1:a:b:x") && !g.matches("user:12:a:x"));
        assert!(Glob::new("*").unwrap().matches(""));
        assert!(Glob::new("a*b*c").unwrap().matches("aXXbYYbc"));
        assert!(!Glob::new("a*b*c").unwrap().matches("aXXbYYb"));
        assert!(Glob::new("").is_err());
        assert!(Glob::new(&"x".repeat(2000)).is_err());
    }

    /// The plain definition, by dynamic programming over (pattern, key) positions.
    fn reference(pattern: &str, key: &str) -> bool {
        let (p, k): (Vec<char>, Vec<char>) = (pattern.chars().collect(), key.chars().collect());
        let mut m = vec![vec![false; k.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=k.len() {
                m[i][j] = match p[i - 1] {
                    '*' => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                    '?' => j > 0 && m[i - 1][j - 1],
                    c => j > 0 && k[j - 1] == c && m[i - 1][j - 1],
                };
            }
        }
        m[p.len()][k.len()]
    }

    #[test]
    fn matching_agrees_with_the_definition() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..20_000 {
            let pattern: String = (0..1 + next(8))
                .map(|_| ['a', 'b', '*', '?', 'é'][next(5) as usize])
                .collect();
            let key: String = (0..next(10))
                .map(|_| ['a', 'b', 'é'][next(3) as usize])
                .collect();
            let Ok(g) = Glob::new(&pattern) else { continue };
            assert_eq!(
                g.matches(&key),
                reference(&pattern, &key),
                "{pattern:?} {key:?}"
            );
        }
        // Parts longer than one machine word.
        let long = format!("*{}?b*", "a".repeat(100));
        let g = Glob::new(&long).unwrap();
        let key = format!("x{}cbz", "a".repeat(100));
        assert!(g.matches(&key) && reference(&long, &key));
        assert!(!g.matches(&key.replace('c', "")));
    }

    #[test]
    fn the_worst_patterns_take_steps_linear_in_the_key() {
        let key = "a".repeat(4096);
        let worst = [
            // Backtracking at every star, with no `b` to end it.
            format!("{}b", "*a".repeat(16)),
            // One long part that almost matches at every place.
            format!("*{}b*", "a".repeat(1000)),
            format!("*{}b", "?".repeat(1000)),
        ];
        for pattern in worst {
            let g = Glob::new(&pattern).unwrap();
            let mut steps = 0;
            assert!(!g.matches_counting(&key, &mut steps));
            // Each key character is looked at once per part search, in at most 16 words.
            assert!(
                steps <= 17 * (key.len() as u64 + pattern.len() as u64),
                "{steps} steps for a pattern of {} bytes",
                pattern.len()
            );
        }
        let e = Glob::new(&"*a".repeat(17)).unwrap_err();
        let cause = std::error::Error::source(&e)
            .and_then(|c| c.downcast_ref::<PatternError>())
            .expect("a PatternError");
        assert_eq!((cause.stars(), cause.pattern_len()), (17, 34));
    }
}
