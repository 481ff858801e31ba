//! `scaler-host PROGRAM`: runs a `ProcessScaler` with one instance of PROGRAM
//! (`PROGRAM --port N`), prints the instance's pid, and waits to be killed. The death
//! test SIGKILLs it and checks the instance does not outlive it.

use std::net::SocketAddr;

fn main() {
    let program = std::env::args().nth(1).expect("usage: scaler-host PROGRAM");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let cfg = support::instance_server_config(&program).expect("a free port");
        let (scaler, _discovery) =
            tower_autoscale::ProcessScaler::new(cfg, |a: SocketAddr| a).expect("valid settings");
        scaler.scale_to(1).await.expect("one instance");
        let pid = scaler.instance_details()[0]
            .pid
            .expect("a running instance");
        println!("{pid}");
        std::future::pending::<()>().await;
    });
}
