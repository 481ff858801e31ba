//! The fleet's settings ([`Config`]), read from the command line by
//! [`Config::from_args`].

use std::path::PathBuf;
use std::time::Duration;

use super::edge;
use super::training::Work;

/// Load shapes for `--load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 10 to 300 requests/s, rising steadily.
    Ramp,
    /// 20 requests/s, then 250 from half-way.
    Step,
    /// 20 requests/s with 300 in the middle third.
    Spike,
}

/// How the live view shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// The terminal view when stdout is a terminal, log lines otherwise.
    Auto,
    /// The terminal view.
    Tui,
    /// A log line per service every few seconds.
    Plain,
    /// Nothing.
    Off,
}

/// The fleet's settings, from the command line ([`Config::from_args`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway's port on 127.0.0.1 (`--port`, default 3000; 0 for any free one).
    pub port: u16,
    /// Where the LMDB files go (`--data-dir`, default a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// The autoscaler's period (`--interval`, default 10 s).
    pub interval: Duration,
    /// A load to drive (`--load ramp|step|spike --duration 60s`).
    pub load: Option<(Shape, Duration)>,
    /// Kill a training instance half-way through the load (`--chaos kill-one`).
    pub chaos: bool,
    /// `--bus redis://HOST:PORT`.
    pub bus: Option<String>,
    /// Keep serving until Ctrl-C (`--serve`).
    pub serve: bool,
    /// `--view auto|tui|plain|off`.
    pub view: ViewMode,
    /// The training instances' work (`--work-ms`, `--cpu-ms`, `--concurrency`).
    pub work: Work,
    /// Training instances at least / at most (`--min-instances`, `--max-instances`).
    pub instances: (usize, usize),
    /// How long load must stay low before scaling down (`--scale-down-window`, 30 s).
    pub scale_down_window: Duration,
    /// How long a manual scale holds its count against the autoscaler
    /// (`--manual-hold`, 5 minutes; 0s: not at all).
    pub manual_hold: Duration,
    /// Requests per second per client address at the gateway
    /// (`--rate-limit`, default 1,000).
    pub rate_limit: u32,
    /// Rate-limit buckets the gateway keeps at most, for addresses and for users each
    /// (`--max-clients`, default 100,000).
    pub max_clients: usize,
    /// The data services' database round trip (`--origin-ms`, default 20).
    pub origin_latency: Duration,
    /// Host names the gateway answers to besides `localhost`, `127.0.0.1` and `[::1]`
    /// (`--host NAME`, repeatable).
    pub hosts: Vec<String>,
    /// What a client may hold at the gateway's edge (`--header-read-timeout`, 30 s;
    /// `--idle-timeout`, 60 s; `--max-connections`, 10,000).
    pub edge: edge::Limits,
    /// The token for scaling and for writes (`FLEET_TOKEN`, which [`main`](super::main) takes out of
    /// the environment so that no child process inherits it); a random one when `None`.
    pub token: Option<String>,
    /// Run the data services without caches (`--no-cache`, for comparisons).
    pub no_cache: bool,
    /// The program for training instances (default: this binary).
    pub program: Option<String>,
    /// Neither `--load` nor `--serve`: the demonstration (which waits for the
    /// scale-down after its load).
    pub demo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port: 3000,
            data_dir: None,
            interval: Duration::from_secs(10),
            load: None,
            chaos: false,
            bus: None,
            serve: false,
            view: ViewMode::Auto,
            work: Work::default(),
            instances: (1, 4),
            scale_down_window: Duration::from_secs(30),
            manual_hold: tower_autoscale::DEFAULT_MANUAL_HOLD,
            rate_limit: 1_000,
            max_clients: 100_000,
            origin_latency: Duration::from_millis(20),
            hosts: Vec::new(),
            edge: edge::Limits::default(),
            token: None,
            no_cache: false,
            program: None,
            demo: false,
        }
    }
}
