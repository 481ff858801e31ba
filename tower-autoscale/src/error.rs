//! [`BuildError`]: a setting that cannot work, found when something is built.

use std::fmt;

/// A setting that cannot work, found by a `build`, `start` or `spawn` (or a policy's
/// [`validated`](crate::ScalingPolicy::validated)): [`setting`](Self::setting) names
/// it as its builder method or policy field does, and the message says what to
/// change.
///
/// ```
/// use tower_autoscale::ScalingPolicy;
///
/// let err = ScalingPolicy::builder().max_instances(0).build().unwrap_err();
/// assert_eq!(err.setting(), "max_instances");
/// assert!(err.to_string().contains("at least 1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    setting: String,
    message: String,
}

impl BuildError {
    pub(crate) fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }

    /// The setting to change (`max_instances`, `metrics.cpu`, `scale_up.policies`,
    /// `check_interval`, `interval`, ...).
    pub fn setting(&self) -> &str {
        &self.setting
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}
