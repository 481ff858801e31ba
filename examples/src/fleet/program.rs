//! The `fleet` program ([`main`]): the flags, the signal handlers, the live view, the
//! load and the orderly stop.

use super::data::FleetBus;
use super::{help, load, training, view, BoxError, Config, Fleet, ViewMode};

/// The `fleet` program: a training instance when started with `--role training`,
/// otherwise the whole fleet with its live view, load and chaos as the flags say; stops
/// everything at Ctrl-C (or SIGTERM).
pub async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(role) = training::from_args(&args) {
        let (port, work) = role?;
        return training::run(port, work).await;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", help());
        return Ok(());
    }
    // The token leaves the environment before any child process starts, so that the
    // training instances (which need no token) do not inherit it.
    let token = std::env::var("FLEET_TOKEN").ok();
    std::env::remove_var("FLEET_TOKEN");
    let cfg = match Config::from_args(&args) {
        Ok(c) => Config { token, ..c },
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let tui = match cfg.view {
        ViewMode::Tui => true,
        ViewMode::Auto => std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ViewMode::Plain | ViewMode::Off => false,
    };
    if !tui {
        tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .init();
    }
    // The signal handlers go in first: a Ctrl-C from here on stops the fleet cleanly
    // (during the start, as soon as it is up) instead of killing this process.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fleet: cannot handle Ctrl-C and SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    let fleet = match Fleet::start(&cfg).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fleet: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "gateway on http://{} (dashboard at /, metrics at /metrics); bus: {}; data in {}",
        fleet.gateway,
        FleetBus::from_flag(cfg.bus.as_deref())
            .map(|b| b.describe())
            .unwrap_or_default(),
        fleet.data_dir().display()
    );
    println!(
        "scaling token: {} (POST /api/v1/system/scale/training/up with `Authorization: Bearer <token>`)",
        if cfg.token.as_deref().is_some_and(|t| !t.trim().is_empty()) {
            "from FLEET_TOKEN".to_string()
        } else {
            fleet.token.clone()
        }
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Ctrl-C or SIGTERM (handlers in place since before the start): stop whatever
    // runs, then shut everything down.
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            let _ = stop_tx.send(true);
        }
    });
    let view = view::spawn(fleet.state.clone(), cfg.view, tui, stop_tx.clone());
    let mut summary = None;
    if let Some((shape, duration)) = cfg.load {
        let plan = load::Plan {
            shape,
            duration,
            chaos: cfg.chaos,
            settle_to: cfg.demo.then_some(cfg.instances.0),
        };
        summary = Some(load::run(&fleet, plan, stop_rx.clone()).await);
    }
    if cfg.serve && !*stop_rx.borrow() {
        let mut rx = stop_rx.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
    view.stop().await;
    if let Some(s) = summary {
        println!("{s}");
    }
    println!(
        "stopping: draining {} training instance(s)",
        fleet.scaler.current()
    );
    fleet.shutdown().await;
    println!("stopped");
    Ok(())
}
