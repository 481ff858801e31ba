//! `KubeScaler` against a local HTTP server that answers a Deployment's scale
//! subresource as the Kubernetes API server does (no cluster exists here).
#![cfg(feature = "kube")]
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Json;
use tower_autoscale::{KubeScaler, Scaler};

#[derive(Clone, Default)]
struct Fake {
    replicas: Arc<Mutex<i32>>,
    patches: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

fn scale(ns: &str, name: &str, n: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "replicas": n },
        "status": { "replicas": n, "selector": "app=training" }
    })
}

async fn get_scale(
    State(f): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    if name != "training" {
        return Err(StatusCode::NOT_FOUND);
    }
    let n = *f.replicas.lock().unwrap();
    Ok(Json(scale(&ns, &name, n)))
}

async fn patch_scale(
    State(f): State<Fake>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<serde_json::Value>, StatusCode> {
    if name != "training" {
        return Err(StatusCode::NOT_FOUND);
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let n = v["spec"]["replicas"]
        .as_i64()
        .ok_or(StatusCode::UNPROCESSABLE_ENTITY)? as i32;
    f.patches.lock().unwrap().push((ct, v));
    *f.replicas.lock().unwrap() = n;
    Ok(Json(scale(&ns, &name, n)))
}

async fn api_server(fake: Fake) -> String {
    let app = axum::Router::new()
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            get(get_scale).patch(patch_scale),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn reads_and_sets_replicas_through_the_scale_subresource() {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let fake = Fake::default();
        *fake.replicas.lock().unwrap() = 3;
        let url = api_server(fake.clone()).await;
        let config = kube::Config::new(url.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let scaler = KubeScaler::connect(client.clone(), "fleet", "training")
            .await
            .unwrap();
        assert_eq!(scaler.current(), 3);
        assert_eq!(scaler.scale_to(5).await.unwrap(), 5);
        assert_eq!(*fake.replicas.lock().unwrap(), 5);
        let patches = fake.patches.lock().unwrap().clone();
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].0, "application/merge-patch+json");
        assert_eq!(
            patches[0].1,
            serde_json::json!({ "spec": { "replicas": 5 } })
        );
        // Someone else scales it: refresh sees it.
        *fake.replicas.lock().unwrap() = 2;
        assert_eq!(scaler.refresh().await.unwrap(), 2);
        assert_eq!(scaler.current(), 2);
        // A Deployment that does not exist: a clear error.
        let e = KubeScaler::connect(client, "fleet", "nope")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("kubernetes"), "{e}");
    })
    .await
    .unwrap();
}
