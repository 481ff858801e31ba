//! Starting an instance: a free port, the command, its keeper task, and the wait until
//! its health target says it is ready (then, and only then, into discovery).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower_health::Target;

use super::{Instance, InstanceEndpoint, InstanceState, ProcessScaler, ScaleError};

/// On Linux, the instance gets SIGKILL if the process that started it dies, even by
/// SIGKILL (where `kill_on_drop` cannot run): no orphan keeps a port and a model in
/// memory. The signal follows the *thread* that spawned the child, which here is a
/// runtime worker that lives as long as the runtime.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // prctl(PR_SET_PDEATHSIG) system call, which is async-signal-safe; it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut tokio::process::Command) {}

impl<S> ProcessScaler<S>
where
    S: Send + 'static,
{
    /// A free port of the range; `reuse` (a crashed instance's own port) may be taken
    /// again.
    pub(super) fn free_port(&self, reuse: Option<u16>) -> Result<u16, ScaleError> {
        let used: Vec<u16> = self
            .lock()
            .iter()
            .map(|i| i.port)
            .filter(|p| Some(*p) != reuse)
            .collect();
        let (lo, hi) = self.inner.cfg.ports;
        for port in lo..=hi {
            if used.contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        Err(ScaleError::PortsExhausted { range: (lo, hi) })
    }

    /// Starts a process and waits until it is ready. With `slot` (a crashed instance's
    /// id and port) the new process takes that instance's place, under its id; if it
    /// fails, the place stays, crashed. Without, a failed start leaves nothing behind.
    pub(super) async fn try_start(&self, slot: Option<(u64, u16)>) -> Result<u16, ScaleError> {
        let cfg = &self.inner.cfg;
        let keep = slot.is_some();
        let port = self.free_port(slot.map(|s| s.1))?;
        let args: Vec<String> = cfg
            .args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut command = tokio::process::Command::new(&cfg.program);
        command
            .args(&args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|error| ScaleError::Spawn {
            command: format!("{} {}", cfg.program, args.join(" ")),
            error,
        })?;
        let pid = child.id();
        let name = format!("127.0.0.1:{port}");
        let stopping = Arc::new(AtomicBool::new(false));
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (exited_tx, exited_rx) = tokio::sync::watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let id = match slot {
            Some((id, _)) => id,
            None => self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        };
        {
            let mut l = self.lock();
            // A restart takes the crashed instance's place, under the lock that
            // `current` reads, so the count never dips or doubles.
            let (restarts, streak, last_exit) =
                match l.iter().position(|i| Some(i.id) == slot.map(|s| s.0)) {
                    Some(at) => {
                        let old = l.remove(at);
                        (old.restarts.saturating_add(1), old.streak, old.last_exit)
                    }
                    None => (0, 0, None),
                };
            l.push(Instance {
                id,
                port,
                name: name.clone(),
                pid,
                state: InstanceState::Starting,
                in_flight: in_flight.clone(),
                started: SystemTime::now(),
                restarts,
                streak,
                ready_at: None,
                last_exit,
                backoff: None,
                stopping: stopping.clone(),
                kill: Some(kill_tx),
                exited: exited_rx.clone(),
            });
        }
        // The process's keeper: waits for its exit (or kills it), and restarts it if it
        // crashed after it was ready.
        let me = self.clone();
        let keeper = async move {
            let status = tokio::select! {
                s = child.wait() => s.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                _ = kill_rx => {
                    let _ = child.kill().await;
                    "killed".to_string()
                }
            };
            if me.on_exit(id, status, &exited_tx) {
                me.crashed(id).await;
            }
        };
        tokio::spawn(keeper);
        let _ = self.inner.monitor.unregister(&name);
        let target = Target::new(&name, &name)
            .path(cfg.health_path.clone())
            .interval(cfg.check_interval)
            .timeout(
                cfg.check_interval
                    .mul_f64(0.8)
                    .max(Duration::from_millis(1)),
            );
        if let Err(e) = self.inner.monitor.register(target) {
            self.stop_instance(id, false, keep).await;
            return Err(ScaleError::Config(e.to_string()));
        }
        let Some(mut ready) = self.inner.monitor.watch(&name) else {
            self.stop_instance(id, false, keep).await;
            return Err(ScaleError::Config(format!("health target {name} vanished")));
        };
        let mut exited = exited_rx;
        let outcome = tokio::time::timeout(cfg.start_timeout, async {
            loop {
                if *ready.borrow_and_update() {
                    return Ok(());
                }
                if *exited.borrow() {
                    return Err(());
                }
                tokio::select! {
                    r = ready.changed() => if r.is_err() { return Err(()) },
                    _ = exited.changed() => {}
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let gate = tower_health::Gate::new(ready.clone());
                let endpoint = InstanceEndpoint {
                    inner: tower_layer::Layer::layer(
                        &tower_health::ReadinessLayer::pending(gate),
                        (self.inner.make)(addr),
                    ),
                    in_flight,
                };
                // Ready and in the balancer under the lock its keeper takes to judge an
                // exit: an exit before this is the start's failure, one after is a crash.
                let joined = {
                    let mut l = self.lock();
                    match l.iter_mut().find(|i| i.id == id) {
                        Some(i) if !*exited.borrow() => {
                            i.state = InstanceState::Ready;
                            i.ready_at = Some(tokio::time::Instant::now());
                            self.inner.endpoints.insert(addr, endpoint);
                            true
                        }
                        _ => false,
                    }
                };
                if joined {
                    tracing::info!(port, pid, "instance ready");
                    Ok(port)
                } else {
                    Err(self.exited_while_starting(id, port, keep, &stopping))
                }
            }
            Ok(Err(())) => Err(self.exited_while_starting(id, port, keep, &stopping)),
            Err(_) => {
                self.stop_instance(id, false, keep).await;
                Err(ScaleError::NeverReady {
                    port,
                    waited: cfg.start_timeout,
                })
            }
        }
    }

    /// The start of instance `id` failed because its process exited: it is left behind
    /// as a crashed place (`keep`) or forgotten.
    pub(super) fn exited_while_starting(
        &self,
        id: u64,
        port: u16,
        keep: bool,
        stopping: &AtomicBool,
    ) -> ScaleError {
        stopping.store(true, Ordering::Release);
        let status = self
            .lock()
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.last_exit.clone())
            .unwrap_or_else(|| "exited during start-up".into());
        self.settle(id, keep);
        ScaleError::Exited { port, status }
    }

    /// After instance `id`'s process is gone: off the monitor, and either forgotten or
    /// (`keep`) left as a crashed place, still counted, for its restart to take.
    pub(super) fn settle(&self, id: u64, keep: bool) {
        let mut l = self.lock();
        let Some(at) = l.iter().position(|i| i.id == id) else {
            return;
        };
        self.inner.monitor.unregister(&l[at].name);
        if keep {
            let i = &mut l[at];
            i.pid = None;
            i.kill = None;
            i.ready_at = None;
            if !i.state.is_crashed() {
                i.state = InstanceState::CrashLoopBackOff;
            }
        } else {
            l.remove(at);
        }
    }
}
