//! Why a manual scale failed: [`ManualScaleError`], [`BeyondBounds`].

use std::fmt;

use crate::process::ScaleError;

/// A manual scale beyond the policy's bounds: nothing changed (409 for HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeyondBounds {
    /// The count asked for.
    pub asked: usize,
    /// The policy's minimum.
    pub min: usize,
    /// The policy's maximum.
    pub max: usize,
}

impl fmt::Display for BeyondBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} instances is outside the policy's {}..={}; nothing was changed",
            self.asked, self.min, self.max
        )
    }
}

impl std::error::Error for BeyondBounds {}

/// Why a manual scale failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManualScaleError {
    /// No such service.
    UnknownService(String),
    /// Outside the policy's bounds.
    BeyondBounds(BeyondBounds),
    /// The scaler failed.
    Scale(ScaleError),
}

impl fmt::Display for ManualScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownService(n) => write!(f, "no service named `{n}`"),
            Self::BeyondBounds(b) => b.fmt(f),
            Self::Scale(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ManualScaleError {}
