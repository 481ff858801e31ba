//! Error types.
//!
//! Configuration mistakes surface as a [`BuildError`] when a tier is built, with a message
//! that names the setting to change. At run time nothing here fails a request: an entry the
//! cache cannot take is an [`InsertError`] (and counted as a rejection), and a fault of the
//! disk tier is a [`DiskError`] that the tiered store and the service log, count and route
//! around.

use std::fmt;
use std::time::Duration;

/// The longest time-to-live an entry may have: 365 days.
///
/// Anything longer is almost always a unit mistake (milliseconds read as seconds).
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A tier or service was configured with a setting that cannot work.
///
/// The message names the setting and what to change.
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn path(action: &str, path: &std::path::Path, err: impl fmt::Display) -> Self {
        Self::new(format!(
            "cannot {action} `{}`: {err}; choose a writable directory for the disk tier",
            path.display()
        ))
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| &**e as &(dyn std::error::Error + 'static))
    }
}

/// Checks a time-to-live, returning a message that says what is wrong with it.
pub(crate) fn check_ttl(ttl: Duration) -> Result<(), InsertError> {
    if ttl.is_zero() {
        Err(InsertError::new(
            InsertErrorKind::Ttl,
            "ttl is zero; give entries a positive time-to-live",
        ))
    } else if ttl > MAX_TTL {
        Err(InsertError::new(
            InsertErrorKind::Ttl,
            format!("ttl of {ttl:?} exceeds the maximum of 365 days; check the unit"),
        ))
    } else {
        Ok(())
    }
}

/// Checks a value against a tier's per-entry limit.
pub(crate) fn check_value_len(tier: &str, len: usize, max: usize) -> Result<(), InsertError> {
    if len > max {
        Err(InsertError::new(
            InsertErrorKind::TooLarge,
            format!(
                "{tier} tier: value of {len} bytes is over the per-entry limit of {max} bytes; \
                 raise max_value_bytes or do not cache it"
            ),
        ))
    } else {
        Ok(())
    }
}

/// Why an entry was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertErrorKind {
    /// The time-to-live was zero or longer than [`MAX_TTL`].
    Ttl,
    /// The value (or key) is larger than the tier's per-entry limit.
    TooLarge,
    /// The key is empty or too long for the tier.
    Key,
    /// The disk tier could not take the write (I/O error, closed writer).
    Disk,
}

/// An entry was rejected; the message says what to change.
#[derive(Debug, Clone)]
pub struct InsertError {
    kind: InsertErrorKind,
    message: String,
}

impl InsertError {
    pub(crate) fn new(kind: InsertErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of rejection this is.
    pub fn kind(&self) -> InsertErrorKind {
        self.kind
    }
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InsertError {}

/// A fault of the disk tier: I/O, a full map, a closed writer, a corrupt record.
///
/// The tiered store and the service never fail a request for one of these: they fall back
/// to memory and the origin, count the fault and log it.
#[derive(Debug)]
pub struct DiskError {
    message: String,
    source: Option<heed::Error>,
}

impl DiskError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn lmdb(context: &str, err: heed::Error) -> Self {
        Self {
            message: format!("disk tier: {context}: {err}"),
            source: Some(err),
        }
    }

    pub(crate) fn reopen(err: impl fmt::Display) -> Self {
        Self::new(format!("disk tier: reopen after compaction: {err}"))
    }

    pub(crate) fn closed() -> Self {
        Self::new("disk tier: the writer thread has stopped")
    }

    pub(crate) fn io(context: &str, path: &std::path::Path, err: std::io::Error) -> Self {
        Self::new(format!("disk tier: {context} `{}`: {err}", path.display()))
    }
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DiskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An invalidation that could not be done: a bad pattern, or a fault of the disk tier
/// (the memory tier was invalidated all the same).
///
/// Where a typed cause exists it is the [`source`](std::error::Error::source): e.g.
/// [`TargetTooLong`](crate::target::TargetTooLong) for a target longer than a
/// cluster message carries, [`PatternError`](crate::PatternError) for a pattern over the bounds.
#[derive(Debug)]
pub struct InvalidateError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl InvalidateError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl std::fmt::Display for InvalidateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
