//! What an invalidation reaches, in words every part of the crate shares: a key, a glob
//! pattern, a tag or a key with its dependents ([`Target`]); the selection the disk tier
//! scans for ([`Select`]); and the record an invalidation leaves behind ([`Tombstone`]).
//! A leaf: it imports nothing of the crate but the error it reports, so the tiers, the
//! cache and the coordinator all build on it without importing one another.

mod glob;

pub use self::glob::{Glob, PatternError};

/// The longest target (key, pattern or tag) a message carries.
pub(crate) const MAX_TARGET: usize = 4096;

/// What an invalidation reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// One key.
    Key(String),
    /// Every key matching a glob.
    Pattern(String),
    /// Every entry with a tag.
    Tag(String),
    /// A key and, transitively, every key registered as depending on it (each node
    /// follows its own dependency edges).
    Dependents(String),
}

/// An invalidation target (key, pattern or tag) longer than a message carries: refused
/// whole, before anything is invalidated, never cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTooLong {
    len: usize,
}

impl TargetTooLong {
    /// The target's length in bytes.
    pub fn target_len(&self) -> usize {
        self.len
    }

    /// The longest target a message carries, in bytes (4,096).
    pub fn max() -> usize {
        MAX_TARGET
    }
}

impl std::fmt::Display for TargetTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalidation target of {} bytes is longer than the {MAX_TARGET} a message carries; \
             nothing was invalidated",
            self.len
        )
    }
}

impl std::error::Error for TargetTooLong {}

impl Target {
    /// The key, pattern or tag.
    pub(crate) fn text(&self) -> &str {
        match self {
            Target::Key(t) | Target::Pattern(t) | Target::Tag(t) | Target::Dependents(t) => t,
        }
    }

    /// Refuses a target longer than a message carries.
    pub(crate) fn check_len(&self) -> Result<(), TargetTooLong> {
        let len = self.text().len();
        if len > MAX_TARGET {
            Err(TargetTooLong { len })
        } else {
            Ok(())
        }
    }
}

/// The record of an invalidation, kept so that a restart still refuses older writes:
/// `row` is `kind \0 target` (`k` key, `p` pattern, `t` tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub(crate) row: Box<str>,
    pub(crate) version: u64,
    /// Unix milliseconds after which it is forgotten.
    pub(crate) until_ms: u64,
}

/// What a bulk removal reaches.
#[derive(Debug)]
pub(crate) enum Select {
    /// Keys matching a glob; its literal prefix bounds an LMDB range scan.
    Pattern(Glob),
    /// Entries carrying a tag (a scan of the records' headers).
    Tag(Box<str>),
}
