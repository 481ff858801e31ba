//! The fleet's command line (clap): flags with descriptions and defaults for `--help`,
//! read into a [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::data::FleetBus;
use super::training::Work;
use super::{Config, Shape, ViewMode};

/// `10s`, `500ms`, `2m` or a number of seconds; `flag` names the flag in the error.
pub fn parse_duration(flag: &str, v: &str) -> Result<Duration, String> {
    let bad = || format!("{flag} {v}: give a duration such as 10s, 500ms, 2m or 1h");
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!(
            "{flag} {v}: give a duration above 0 and at most a day"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn duration(v: &str) -> Result<Duration, String> {
    parse_duration("", v).map_err(|e| e.trim_start().to_owned())
}

fn port(v: &str) -> Result<u16, String> {
    v.parse().map_err(|_| "give a port, 0 to 65535".to_owned())
}

fn rate_limit(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("give requests per second, 1 to 1000000".into()),
    }
}

fn max_clients(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err("give a number of clients, 1 to 10000000".into()),
    }
}

fn host(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if ok {
        Ok(v.to_ascii_lowercase())
    } else {
        Err("give a host name such as fleet.example or fleet.example:8080".into())
    }
}

fn max_connections(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("give a number of connections, 1 to 1000000".into()),
    }
}

fn shape(v: &str) -> Result<Shape, String> {
    match v {
        "ramp" => Ok(Shape::Ramp),
        "step" => Ok(Shape::Step),
        "spike" => Ok(Shape::Spike),
        _ => Err("give ramp, step or spike".into()),
    }
}

fn chaos(v: &str) -> Result<bool, String> {
    match v {
        "kill-one" => Ok(true),
        _ => Err("the one mode is kill-one".into()),
    }
}

fn view(v: &str) -> Result<ViewMode, String> {
    match v {
        "auto" => Ok(ViewMode::Auto),
        "tui" => Ok(ViewMode::Tui),
        "plain" => Ok(ViewMode::Plain),
        "off" => Ok(ViewMode::Off),
        _ => Err("give auto, tui, plain or off".into()),
    }
}

/// The fleet's flags.
#[derive(Debug, Parser)]
#[command(
    name = "fleet",
    about = "A whole fleet on one machine: gateway, cached data services, autoscaled training instances",
    after_help = "With neither --load nor --serve: a 30-second demonstration, as\n  --load spike --duration 30s --chaos kill-one --interval 2s --scale-down-window 6s",
    // A flag given twice takes its last value (a wrapper's defaults, then the user's).
    args_override_self = true
)]
struct Flags {
    /// The gateway's port on 127.0.0.1 (0 for any free one).
    #[arg(long, default_value_t = 3000, value_parser = port)]
    port: u16,
    /// Keep serving until Ctrl-C or SIGTERM.
    #[arg(long)]
    serve: bool,
    /// A load to drive: ramp, step or spike.
    #[arg(long, value_parser = shape)]
    load: Option<Shape>,
    /// How long the load runs [default: 60s; 30s in the demonstration].
    #[arg(long, value_parser = duration, allow_hyphen_values = true)]
    duration: Option<Duration>,
    /// Kill a training instance half-way through the load: kill-one.
    #[arg(long, value_parser = chaos)]
    chaos: Option<bool>,
    /// The invalidation bus: redis://HOST:PORT (in process without it).
    #[arg(long)]
    bus: Option<String>,
    /// The autoscaler's period [default: 10s; 2s in the demonstration].
    #[arg(long, value_parser = duration, allow_hyphen_values = true)]
    interval: Option<Duration>,
    /// The live view: auto (a terminal view on a terminal), tui, plain or off.
    #[arg(long, default_value = "auto", value_parser = view)]
    view: ViewMode,
    /// Where the LMDB files go [default: a temporary directory, removed at the end].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training instances at least.
    #[arg(long, default_value_t = 1)]
    min_instances: usize,
    /// Training instances at most (up to 32).
    #[arg(long, default_value_t = 4)]
    max_instances: usize,
    /// How long load must stay low before scaling down [default: 30s; 6s in the demonstration].
    #[arg(long, value_parser = duration, allow_hyphen_values = true)]
    scale_down_window: Option<Duration>,
    /// How long a manual scale (the orchestrator's POST .../scale) holds its count: the
    /// autoscaler keeps at least a scale-up's count, at most a scale-down's, until then
    /// (0s: it may revise at once).
    #[arg(long, value_parser = duration, default_value = "5m")]
    manual_hold: Duration,
    /// Each training request's waiting time, in milliseconds.
    #[arg(long, value_parser = crate::flags::whole_number, default_value_t = Work::default().wait.as_millis() as u64)]
    work_ms: u64,
    /// Each training request's CPU time, in milliseconds.
    #[arg(long, value_parser = crate::flags::whole_number, default_value_t = Work::default().cpu.as_millis() as u64)]
    cpu_ms: u64,
    /// Requests a training instance serves at once.
    #[arg(long, value_parser = crate::flags::whole_number, default_value_t = Work::default().concurrency as u64)]
    concurrency: u64,
    /// Requests per second per client address at the gateway (every request counts
    /// against its address first, then against its user's own limit).
    #[arg(long, default_value_t = 1_000, value_parser = rate_limit)]
    rate_limit: u32,
    /// Rate-limit buckets the gateway keeps at most, for client addresses and for users
    /// each (the least recently used go first).
    #[arg(long, default_value_t = 100_000, value_parser = max_clients)]
    max_clients: usize,
    /// Another host name the gateway answers to (repeatable); it always answers to
    /// localhost, 127.0.0.1 and [::1] with its port, and to no other.
    #[arg(long = "host", value_name = "NAME", value_parser = host)]
    hosts: Vec<String>,
    /// How long a request's head may take to arrive at the gateway (also the wait for the
    /// next request on a kept-alive connection).
    #[arg(long, default_value = "30s", value_parser = duration)]
    header_read_timeout: Duration,
    /// How long a gateway connection may stay with no request in flight and no byte
    /// moving; also how long a request body may take to arrive.
    #[arg(long, default_value = "60s", value_parser = duration)]
    idle_timeout: Duration,
    /// Connections the gateway holds open at once; one beyond is closed at once.
    #[arg(long, default_value_t = 10_000, value_parser = max_connections)]
    max_connections: usize,
    /// The data services' database round trip, in milliseconds.
    #[arg(long, default_value_t = 20, value_parser = crate::flags::whole_number)]
    origin_ms: u64,
    /// Run the data services without caches (for comparisons).
    #[arg(long)]
    no_cache: bool,
}

/// The text of `--help`.
pub fn help() -> String {
    use clap::CommandFactory;
    Flags::command().render_long_help().to_string()
}

impl Config {
    /// Reads the flags in `args` (without the program name). The demonstration's
    /// settings apply when neither `--load` nor `--serve` is given. The error is what
    /// to print: `--help`'s text, or what to change.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let program = std::iter::once("fleet".to_owned());
        let f = Flags::try_parse_from(program.chain(args.iter().cloned()))
            .map_err(crate::flags::flag_error)?;
        let mut c = Config {
            port: f.port,
            data_dir: f.data_dir,
            chaos: f.chaos.unwrap_or(false),
            bus: f.bus,
            serve: f.serve,
            view: f.view,
            work: Work {
                wait: Duration::from_millis(f.work_ms),
                cpu: Duration::from_millis(f.cpu_ms),
                concurrency: f.concurrency.clamp(1, 10_000) as usize,
            },
            instances: (f.min_instances, f.max_instances),
            rate_limit: f.rate_limit,
            max_clients: f.max_clients,
            hosts: f.hosts,
            edge: super::edge::Limits {
                header_read: f.header_read_timeout,
                idle: f.idle_timeout,
                max_connections: f.max_connections,
            },
            origin_latency: Duration::from_millis(f.origin_ms),
            no_cache: f.no_cache,
            manual_hold: f.manual_hold,
            ..Config::default()
        };
        if c.instances.0 == 0 || c.instances.0 > c.instances.1 || c.instances.1 > 32 {
            return Err(format!(
                "--min-instances {} --max-instances {}: give 1 <= min <= max <= 32",
                c.instances.0, c.instances.1
            ));
        }
        if f.duration.is_some() && f.load.is_none() {
            return Err("--duration goes with --load ramp|step|spike".into());
        }
        let (mut shape, mut duration) = (f.load, f.duration);
        let (mut interval, mut window) = (f.interval, f.scale_down_window);
        c.demo = shape.is_none() && !c.serve;
        if c.demo {
            shape = Some(Shape::Spike);
            duration = duration.or(Some(Duration::from_secs(30)));
            c.chaos = true;
            interval = interval.or(Some(Duration::from_secs(2)));
            window = window.or(Some(Duration::from_secs(6)));
        }
        c.load = shape.map(|s| (s, duration.unwrap_or(Duration::from_secs(60))));
        c.interval = interval.unwrap_or(c.interval);
        c.scale_down_window = window.unwrap_or(c.scale_down_window);
        FleetBus::from_flag(c.bus.as_deref())?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_demonstration_and_explicit_flags() {
        let demo = Config::from_args(&[]).unwrap();
        assert!(demo.demo && demo.chaos);
        assert_eq!(demo.load, Some((Shape::Spike, Duration::from_secs(30))));
        assert_eq!(demo.interval, Duration::from_secs(2));
        let c = Config::from_args(&args(&[
            "--serve",
            "--port",
            "0",
            "--interval",
            "500ms",
            "--work-ms",
            "5",
            "--view",
            "off",
        ]))
        .unwrap();
        assert!(!c.demo && c.serve && c.load.is_none());
        assert_eq!((c.port, c.interval), (0, Duration::from_millis(500)));
        assert_eq!(c.work.wait, Duration::from_millis(5));
        assert_eq!(c.view, ViewMode::Off);
        let twice = Config::from_args(&args(&["--serve", "--port", "1", "--port", "2"])).unwrap();
        assert_eq!(twice.port, 2, "the last of a flag given twice wins");
        let hosts = Config::from_args(&args(&["--serve", "--host", "A.example", "--host", "b:81"]))
            .unwrap()
            .hosts;
        assert_eq!(hosts, ["a.example", "b:81"], "--host is repeatable");
        assert!(Config::from_args(&args(&["--host", "a b"])).is_err());
        let edge = Config::from_args(&args(&["--serve"])).unwrap().edge;
        assert_eq!(edge, super::super::edge::Limits::default());
        assert_eq!(
            (edge.header_read, edge.idle, edge.max_connections),
            (Duration::from_secs(30), Duration::from_secs(60), 10_000)
        );
        let edge = Config::from_args(&args(&[
            "--serve",
            "--header-read-timeout",
            "2s",
            "--idle-timeout",
            "500ms",
            "--max-connections",
            "8",
        ]))
        .unwrap()
        .edge;
        assert_eq!(
            (edge.header_read, edge.idle, edge.max_connections),
            (Duration::from_secs(2), Duration::from_millis(500), 8)
        );
        assert!(Config::from_args(&args(&["--max-connections", "0"])).is_err());
        let help = Config::from_args(&args(&["--help"])).unwrap_err();
        assert!(
            help.contains("--scale-down-window") && help.contains("[default: 3000]"),
            "{help}"
        );
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn no_flags_is_the_demonstration() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(c.load, Some((Shape::Spike, Duration::from_secs(30))));
        assert!(c.chaos);
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.scale_down_window, Duration::from_secs(6));
        assert_eq!(c.port, 3000);
        assert!(c.demo);
        assert!(!Config::from_args(&words("--load step")).unwrap().demo);
    }

    #[test]
    fn serve_keeps_the_defaults() {
        let c = Config::from_args(&words("--serve")).unwrap();
        assert_eq!(c.load, None);
        assert!(!c.chaos);
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.scale_down_window, Duration::from_secs(30));
        assert_eq!(c.manual_hold, Duration::from_secs(300));
        assert_eq!(c.instances, (1, 4));
    }

    #[test]
    fn flags_are_read() {
        let c = Config::from_args(&words(
            "--port 0 --load ramp --duration 90s --chaos kill-one --interval 500ms \
             --view plain --min-instances 2 --max-instances 6 --work-ms 5 --cpu-ms 1 \
             --concurrency 16 --rate-limit 50 --origin-ms 0 --no-cache --scale-down-window 1m \
             --manual-hold 90s",
        ))
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.load, Some((Shape::Ramp, Duration::from_secs(90))));
        assert!(c.chaos && c.no_cache);
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.view, ViewMode::Plain);
        assert_eq!(c.instances, (2, 6));
        assert_eq!(
            c.work,
            Work {
                wait: Duration::from_millis(5),
                cpu: Duration::from_millis(1),
                concurrency: 16
            }
        );
        assert_eq!(c.rate_limit, 50);
        assert_eq!(c.origin_latency, Duration::ZERO);
        assert_eq!(c.scale_down_window, Duration::from_secs(60));
        assert_eq!(c.manual_hold, Duration::from_secs(90));
    }

    #[test]
    fn bad_flags_say_what_to_give() {
        for (a, says) in [
            ("--port 70000", "0 to 65535"),
            ("--port", "needs a value"),
            ("--duration 10s", "goes with --load"),
            ("--interval -1s", "duration"),
            ("--interval 2d", "duration"),
            ("--interval 0", "above 0"),
            ("--rate-limit 0", "1 to 1000000"),
            ("--work-ms lots", "whole number"),
            ("--max-instances 40", "<= 32"),
            ("--view fancy", "auto, tui, plain or off"),
            ("--frobnicate", "unknown flag"),
        ] {
            let err = Config::from_args(&words(a)).unwrap_err();
            assert!(err.contains(says), "{a}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("x", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("x", "1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert!(parse_duration("x", "25h").is_err());
        assert!(parse_duration("x", "NaNs").is_err());
    }
}
