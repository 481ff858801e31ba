//! RFC 9111 conformance of the HTTP cache, table-driven, against a real axum origin on
//! 127.0.0.1 reached through hyper's client, with the cache layer in between.
//!
//! The origin answers `/<case>/<anything>?<settings>` with the response the settings
//! describe (`cc` Cache-Control, `vary`, `etag`, `lm` Last-Modified, `exp` Expires,
//! `date`, `age`, `status`, `cookie`, `skey`, `len`, `loc`), and a body that names the
//! origin call (`call 3`), so a step can tell a stored response from a fresh one. Each
//! case names the RFC section it checks and runs on a fresh store.

mod cases;
mod conformance;
mod credentials;
mod disk_parts;
mod disk_revalidate;
mod disk_splice;
mod disk_spool;
mod edge;
mod final_attack;
mod freshness;
mod interim;
mod last_attack;
mod parts_attack;
mod proxy;
mod proxy_policy;
mod range;
mod restart;
mod rfc_cases;
mod spool_attack;
mod streaming;
mod targeted;
mod vary;

use std::time::Duration;

// What the modules share.
use self::conformance::{origin, Origin};
use self::proxy::{send_via, x_cache_of, Proxy};

const BOUND: Duration = Duration::from_secs(60);
