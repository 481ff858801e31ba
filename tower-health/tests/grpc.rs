//! The gRPC health service follows probe readiness (feature `grpc`).
#![cfg(feature = "grpc")]

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::{health_reporter, HealthService};
use tower_health::{grpc, Probes};

async fn status(service: &HealthService, name: &str) -> ServingStatus {
    match service
        .check(tonic::Request::new(HealthCheckRequest {
            service: name.into(),
        }))
        .await
    {
        Ok(res) => ServingStatus::try_from(res.into_inner().status).unwrap(),
        // Not registered yet: the reporting task has not run.
        Err(status) if status.code() == tonic::Code::NotFound => ServingStatus::Unknown,
        Err(status) => panic!("{status}"),
    }
}

#[tokio::test]
async fn grpc_health_follows_readiness_and_draining() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let probes = Probes::new();
        let (reporter, _server) = health_reporter();
        let service = HealthService::from_health_reporter(reporter.clone());
        let _task = grpc::report_readiness(&probes, reporter, ["", "budget.Budget"]);
        let wait_for = |want: ServingStatus| {
            let service = &service;
            async move {
                while status(service, "budget.Budget").await != want {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        wait_for(ServingStatus::Serving).await;
        assert_eq!(status(&service, "").await, ServingStatus::Serving);
        probes.set_draining(true);
        wait_for(ServingStatus::NotServing).await;
        assert_eq!(status(&service, "").await, ServingStatus::NotServing);
        probes.set_draining(false);
        wait_for(ServingStatus::Serving).await;
    })
    .await
    .expect("bounded");
}
