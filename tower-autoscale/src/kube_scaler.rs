//! [`KubeScaler`] (feature `kube`): a Deployment's `spec.replicas` through its scale
//! subresource, with the `kube` crate.
//!
//! It reads and sets the count only; Kubernetes starts, readies and stops the pods
//! (readiness probes and `preStop` hooks take the place of the process scaler's gate
//! and drain). No cluster is available where this crate is developed: it is tested
//! against a local HTTP server that answers the scale subresource's `GET` and merge
//! `PATCH` as the API server does.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_autoscale::KubeScaler;
//!
//! let client = kube::Client::try_default().await?;
//! let scaler = KubeScaler::connect(client, "default", "training").await?;
//! println!("{} replicas", tower_autoscale::Scaler::current(&scaler));
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};

use crate::manager::Scaler;
use crate::process::ScaleError;

/// A Deployment's replica count; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct KubeScaler {
    api: Api<Deployment>,
    name: String,
    replicas: Arc<AtomicUsize>,
}

impl fmt::Debug for KubeScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeScaler")
            .field("deployment", &self.name)
            .field("replicas", &self.replicas.load(Ordering::Relaxed))
            .finish()
    }
}

fn kube_err(e: kube::Error) -> ScaleError {
    ScaleError::Config(format!("kubernetes: {e}"))
}

impl KubeScaler {
    /// The scaler of Deployment `name` in `namespace`; reads its count now.
    pub async fn connect(
        client: kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Self, ScaleError> {
        let s = Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            replicas: Arc::new(AtomicUsize::new(0)),
        };
        s.refresh().await?;
        Ok(s)
    }

    /// Reads the count again (someone else may have changed it).
    pub async fn refresh(&self) -> Result<usize, ScaleError> {
        let scale = self.api.get_scale(&self.name).await.map_err(kube_err)?;
        let n = scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as usize;
        self.replicas.store(n, Ordering::Relaxed);
        Ok(n)
    }

    async fn set(&self, n: usize) -> Result<usize, ScaleError> {
        let n = i32::try_from(n).map_err(|_| {
            ScaleError::Config(format!("{n} replicas is more than Kubernetes takes"))
        })?;
        let patch = serde_json::json!({ "spec": { "replicas": n } });
        let scale = self
            .api
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err)?;
        let now = scale.spec.and_then(|s| s.replicas).unwrap_or(n).max(0) as usize;
        self.replicas.store(now, Ordering::Relaxed);
        Ok(now)
    }
}

impl Scaler for KubeScaler {
    fn current(&self) -> usize {
        self.replicas.load(Ordering::Relaxed)
    }

    fn scale_to(
        &self,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<usize, ScaleError>> + Send + '_>> {
        Box::pin(self.set(n))
    }
}
