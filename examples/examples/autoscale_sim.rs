//! tower-autoscale against the Kubernetes HPA on load traces, in the deterministic
//! simulator; prints a table and draws one SVG chart per trace.
//!
//! ```sh
//! cargo run --release -p examples --example autoscale_sim -- [--out DIR] [--csv NAME=FILE ...]
//! ```
//!
//! Traces: `Trace::standard()` (step, ramp, daily sine, flash-crowd spike, a seeded noisy
//! random walk, a slow sawtooth, a seeded noisy diurnal curve), and any CSV of
//! `seconds,requests_per_second` given with `--csv`. Charts go to `DIR` (default
//! `target/autoscale-sim`): the load, both scalers' instance counts, and both p99s
//! against the SLO over time. The scoring is in `tower_autoscale::sim`'s docs.

use std::path::PathBuf;

use plotters::prelude::*;
use tower_autoscale::sim::{EngineScaler, Hpa, Run, SimConfig, Simulator, Trace};

fn chart(
    path: &std::path::Path,
    trace: &Trace,
    ours: &Run,
    hpa: &Run,
    slo: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((3, 1));
    let n = trace.rates.len() as f64;
    // Load.
    let max_rate = trace.rates.iter().cloned().fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&areas[0])
        .caption(
            format!("{}: offered load (requests/s)", trace.name),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n, 0f64..max_rate)?;
    c.configure_mesh().x_desc("seconds").draw()?;
    c.draw_series(LineSeries::new(
        trace.rates.iter().enumerate().map(|(t, r)| (t as f64, *r)),
        &BLACK,
    ))?;
    // Instances.
    let max_n = ours
        .ticks
        .iter()
        .chain(&hpa.ticks)
        .map(|t| t.running)
        .max()
        .unwrap_or(1) as f64
        * 1.1;
    let mut c = ChartBuilder::on(&areas[1])
        .caption("instances running", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n, 0f64..max_n.max(2.0))?;
    c.configure_mesh().x_desc("seconds").draw()?;
    c.draw_series(LineSeries::new(
        ours.ticks
            .iter()
            .enumerate()
            .map(|(t, k)| (t as f64, k.running as f64)),
        &BLUE,
    ))?
    .label("tower-autoscale")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    c.draw_series(LineSeries::new(
        hpa.ticks
            .iter()
            .enumerate()
            .map(|(t, k)| (t as f64, k.running as f64)),
        &RED,
    ))?
    .label("Kubernetes HPA")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    // p99 against the SLO (log scale would hide the SLO line; cap the view at 4x SLO).
    let top = slo * 4.0;
    let mut c = ChartBuilder::on(&areas[2])
        .caption(
            format!("p99 latency (ms), SLO {slo} ms"),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n, 0f64..top)?;
    c.configure_mesh().x_desc("seconds").draw()?;
    c.draw_series(LineSeries::new(
        ours.ticks
            .iter()
            .enumerate()
            .map(|(t, k)| (t as f64, k.p99_ms.min(top))),
        &BLUE,
    ))?;
    c.draw_series(LineSeries::new(
        hpa.ticks
            .iter()
            .enumerate()
            .map(|(t, k)| (t as f64, k.p99_ms.min(top))),
        &RED,
    ))?;
    c.draw_series(LineSeries::new(
        [(0.0, slo), (n, slo)],
        BLACK.stroke_width(1),
    ))?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut out = PathBuf::from("target/autoscale-sim");
    let mut traces = Trace::standard();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            "--csv" => {
                let v = args.next().ok_or("--csv needs NAME=FILE")?;
                let (name, file) = v.split_once('=').ok_or("--csv needs NAME=FILE")?;
                let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
                traces.push(Trace::from_csv(name, &text)?);
            }
            other => return Err(format!("unknown argument {other}; see the example's docs").into()),
        }
    }
    std::fs::create_dir_all(&out)?;
    let cfg = SimConfig::default();
    let sim = Simulator::new(cfg.clone())?;
    println!(
        "instances of {} requests/s, {} s to start, evaluated every {} s; SLO p99 <= {} ms; CPU target {}%",
        cfg.capacity, cfg.startup, cfg.interval, cfg.slo_ms, cfg.target_cpu * 100.0
    );
    println!(
        "{:<12} {:<16} {:>9} {:>7} {:>7} {:>8} {:>11} {:>7} {:>5}",
        "trace",
        "scaler",
        "SLO-viol s",
        "under",
        "over",
        "accuracy",
        "inst-secs",
        "actions",
        "flips"
    );
    let mut all_met = true;
    for trace in &traces {
        let mut ours = EngineScaler::new("tower-autoscale", EngineScaler::default_policy(&cfg))?;
        let mut hpa = Hpa::new(cfg.target_cpu, cfg.min, cfg.max);
        let a = sim.run(trace, &mut ours);
        let b = sim.run(trace, &mut hpa);
        for (label, r) in [("tower-autoscale", &a), ("Kubernetes HPA", &b)] {
            let s = r.score;
            println!(
                "{:<12} {:<16} {:>9} {:>6.1}% {:>6.1}% {:>8.3} {:>11} {:>7} {:>5}",
                trace.name,
                label,
                s.slo_violation_secs,
                s.under_share * 100.0,
                s.over_share * 100.0,
                s.accuracy,
                s.instance_secs,
                s.actions,
                s.flips
            );
        }
        let (sa, sb) = (a.score, b.score);
        let ratio = sa.instance_secs as f64 / sb.instance_secs as f64;
        let met =
            sa.slo_violation_secs <= sb.slo_violation_secs && ratio <= 1.1 && sa.flips <= sb.flips;
        all_met &= met;
        println!(
            "{:<12} ours/HPA: SLO-violation {} vs {} s, instance-seconds {:.2}x, flips {} vs {}: {}",
            "", sa.slo_violation_secs, sb.slo_violation_secs, ratio, sa.flips, sb.flips,
            if met { "target met" } else { "target not met" }
        );
        let path = out.join(format!("{}.svg", trace.name));
        chart(&path, trace, &a, &b, cfg.slo_ms)?;
        println!("{:<12} chart: {}", "", path.display());
    }
    println!(
        "target (no more SLO-violation seconds than the HPA on every trace, <= 1.1x its instance-seconds, no more flips): {}",
        if all_met { "met on every trace" } else { "not met on every trace" }
    );
    Ok(())
}
