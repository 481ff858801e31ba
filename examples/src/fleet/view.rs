//! The fleet's live view in the terminal: a full-screen table (ratatui) when stdout is a
//! terminal, refreshed every second (`q` or Ctrl-C quits); otherwise a log line per
//! service every five seconds. Both read [`Gateway::overview`], as the dashboard does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::gateway::{Gateway, Overview, ServiceView};
use super::ViewMode;

/// The running view; [`ViewHandle::stop`] ends it (restoring the terminal).
#[derive(Debug)]
pub struct ViewHandle {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ViewHandle {
    /// Stops the view.
    pub async fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Starts the view `mode` asks for (`tui`: whether the terminal view applies); a quit
/// key in the terminal view sends `true` on `quit`.
pub fn spawn(gw: Arc<Gateway>, mode: ViewMode, tui: bool, quit: watch::Sender<bool>) -> ViewHandle {
    let done = Arc::new(AtomicBool::new(false));
    let mut handle = ViewHandle {
        done: done.clone(),
        thread: None,
        task: None,
    };
    if mode == ViewMode::Off {
        return handle;
    }
    if tui {
        handle.thread = Some(std::thread::spawn(move || {
            if let Err(e) = run_tui(&gw, &done, &quit) {
                eprintln!("live view: {e}");
            }
        }));
    } else {
        handle.task = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                for line in lines(&gw.overview()) {
                    println!("{line}");
                }
            }
        }));
    }
    handle
}

fn instances(s: &ServiceView) -> String {
    format!(
        "{} ready {} starting {} draining",
        s.ready, s.starting, s.draining
    )
}

fn cache(s: &ServiceView) -> String {
    s.cache.as_ref().map_or_else(
        || "-".into(),
        |c| {
            format!(
                "{:.0}% (mem {:.0}%, disk {:.0}%)",
                c.hit_pct, c.memory_hit_pct, c.disk_hit_pct
            )
        },
    )
}

fn decision(s: &ServiceView) -> String {
    s.last_decision.as_ref().map_or_else(
        || "-".into(),
        |d| format!("{} {} -> {}: {}", d.action, d.from, d.to, d.reason),
    )
}

/// The plain view: one line per service.
pub fn lines(o: &Overview) -> Vec<String> {
    o.services
        .iter()
        .map(|s| {
            format!(
                "[{:>5.0} s] {:<8} {} | {:>6.1} req/s p99 {:>7.1} ms errors {:>4.1}% | cache {} | last decision: {}",
                o.uptime_s,
                s.name,
                instances(s),
                s.rps,
                s.p99_ms,
                s.error_pct,
                cache(s),
                decision(s)
            )
        })
        .collect()
}

fn run_tui(
    gw: &Gateway,
    done: &AtomicBool,
    quit: &watch::Sender<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use crossterm::event::{self, Event, KeyCode, KeyModifiers};
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Modifier, Style};
    use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

    let mut terminal = ratatui::try_init()?;
    let mut last = Instant::now() - Duration::from_secs(2);
    let result = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        while !done.load(Ordering::Relaxed) {
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                let o = gw.overview();
                terminal.draw(|f| {
                    let [top, mid, bottom] = Layout::vertical([
                        Constraint::Length(o.services.len() as u16 + 3),
                        Constraint::Min(5),
                        Constraint::Length(8),
                    ])
                    .areas(f.area());
                    let header = Row::new([
                        "service",
                        "instances",
                        "req/s",
                        "p99 ms",
                        "errors",
                        "cache hits",
                        "last decision",
                    ])
                    .style(Style::default().add_modifier(Modifier::BOLD));
                    let rows = o.services.iter().map(|s| {
                        Row::new([
                            s.name.clone(),
                            instances(s),
                            format!("{:.1}", s.rps),
                            format!("{:.1}", s.p99_ms),
                            format!("{:.1}%", s.error_pct),
                            cache(s),
                            decision(s),
                        ])
                    });
                    let services = Table::new(
                        rows,
                        [
                            Constraint::Length(9),
                            Constraint::Length(32),
                            Constraint::Length(8),
                            Constraint::Length(8),
                            Constraint::Length(7),
                            Constraint::Length(28),
                            Constraint::Min(20),
                        ],
                    )
                    .header(header)
                    .block(Block::default().borders(Borders::ALL).title(format!(
                        " fleet: up {:.0} s, {} gateway requests, {} rate-limited (q quits) ",
                        o.uptime_s, o.gateway_requests, o.rate_limited
                    )));
                    f.render_widget(services, top);
                    let rows = o.services.iter().flat_map(|s| {
                        s.instances.iter().map(move |i| {
                            Row::new([
                                s.name.clone(),
                                i.name.clone(),
                                i.state.clone(),
                                format!("{:.0}%", i.share * 100.0),
                                i.in_flight.to_string(),
                                i.requests.to_string(),
                                format!("{:.1}", i.p99_ms),
                                i.breaker.clone().unwrap_or_else(|| "-".into()),
                            ])
                        })
                    });
                    let table = Table::new(
                        rows,
                        [
                            Constraint::Length(9),
                            Constraint::Length(18),
                            // The longest state: "crash loop back-off".
                            Constraint::Length(20),
                            Constraint::Length(6),
                            Constraint::Length(9),
                            Constraint::Length(9),
                            Constraint::Length(8),
                            Constraint::Min(8),
                        ],
                    )
                    .header(
                        Row::new([
                            "service",
                            "instance",
                            "state",
                            "share",
                            "in flight",
                            "requests",
                            "p99 ms",
                            "breaker",
                        ])
                        .style(Style::default().add_modifier(Modifier::BOLD)),
                    )
                    .block(Block::default().borders(Borders::ALL).title(" instances "));
                    f.render_widget(table, mid);
                    let history: Vec<String> = o
                        .actions
                        .iter()
                        .take(6)
                        .map(|a| {
                            format!(
                                "{} {}: {} -> {}{}",
                                a.service,
                                a.by,
                                a.from,
                                a.now,
                                a.reason
                                    .as_deref()
                                    .map(|r| format!(" ({r})"))
                                    .unwrap_or_default()
                            )
                        })
                        .collect();
                    f.render_widget(
                        Paragraph::new(history.join("\n")).block(
                            Block::default()
                                .borders(Borders::ALL)
                                .title(" scaling history (newest first) "),
                        ),
                        bottom,
                    );
                })?;
            }
            if event::poll(Duration::from_millis(200))? {
                if let Event::Key(k) = event::read()? {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || k.code == KeyCode::Char('q') {
                        let _ = quit.send(true);
                    }
                }
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::gateway;
    #[test]
    fn plain_view_lines_carry_the_figures() {
        let o = gateway::Overview {
            uptime_s: 12.0,
            services: vec![gateway::ServiceView {
                name: "budget".into(),
                ready: 2,
                starting: 1,
                rps: 42.5,
                p99_ms: 3.25,
                error_pct: 0.5,
                cache: Some(gateway::CacheView {
                    memory_hit_pct: 60.0,
                    disk_hit_pct: 20.0,
                    hit_pct: 80.0,
                    ..Default::default()
                }),
                last_decision: Some(gateway::DecisionView {
                    action: "scale up".into(),
                    from: 1,
                    to: 3,
                    reason: "in_flight 6.0 vs target 2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let line = &lines(&o)[0];
        for part in [
            "budget",
            "2 ready 1 starting 0 draining",
            "42.5 req/s",
            "p99     3.2 ms",
            "errors  0.5%",
            "cache 80% (mem 60%, disk 20%)",
            "scale up 1 -> 3: in_flight 6.0 vs target 2",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }
}
