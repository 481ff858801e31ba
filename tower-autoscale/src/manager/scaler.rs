//! [`Scaler`]: what runs a service's instances, implemented for [`ProcessScaler`].

use std::future::Future;
use std::pin::Pin;

use crate::process::{InstanceDetails, ProcessScaler, ScaleError};

/// Something that runs a service's instances.
pub trait Scaler: Send + Sync + 'static {
    /// Instances running or starting.
    fn current(&self) -> usize;

    /// Starts or stops instances until `n` run; returns how many run.
    fn scale_to(
        &self,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<usize, ScaleError>> + Send + '_>>;

    /// The instances, for status pages.
    fn instances(&self) -> Vec<InstanceDetails> {
        Vec::new()
    }
}

impl<S: Send + 'static> Scaler for ProcessScaler<S> {
    fn current(&self) -> usize {
        ProcessScaler::current(self)
    }

    fn scale_to(
        &self,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<usize, ScaleError>> + Send + '_>> {
        Box::pin(ProcessScaler::scale_to(self, n))
    }

    fn instances(&self) -> Vec<InstanceDetails> {
        self.instance_details()
    }
}
