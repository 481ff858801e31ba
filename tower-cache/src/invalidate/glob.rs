//! Glob patterns over keys: `*` any run of characters, `?` one character.

use super::InvalidateError;

/// A checked glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<str>,
    /// The literal start, before the first wildcard: a prefix range scan on disk.
    prefix_len: usize,
}

/// The longest pattern accepted, in bytes.
const MAX_PATTERN: usize = 1024;

impl Glob {
    /// Checks `pattern`: not empty, at most 1 KiB.
    pub fn new(pattern: &str) -> Result<Self, InvalidateError> {
        if pattern.is_empty() {
            return Err(InvalidateError::new(
                "invalidation pattern is empty; give a key or a glob such as `provider:*`",
            ));
        }
        if pattern.len() > MAX_PATTERN {
            return Err(InvalidateError::new(format!(
                "invalidation pattern of {} bytes; keep it under {MAX_PATTERN}",
                pattern.len()
            )));
        }
        let prefix_len = pattern.find(['*', '?']).unwrap_or(pattern.len());
        Ok(Self {
            pattern: pattern.into(),
            prefix_len,
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

    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        let (p, k): (Vec<char>, Vec<char>) =
            (self.pattern.chars().collect(), key.chars().collect());
        // Iterative matching with one backtrack point: linear in practice, O(p x k) at worst.
        let (mut pi, mut ki) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ki < k.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == k[ki]) {
                pi += 1;
                ki += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ki));
                pi += 1;
            } else if let Some((sp, sk)) = star {
                pi = sp + 1;
                ki = sk + 1;
                star = Some((sp, sk + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
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
}
