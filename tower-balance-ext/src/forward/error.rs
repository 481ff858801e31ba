//! What an upstream's failure answers the client.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// An upstream's failure, with the status the client is answered.
#[derive(Debug)]
pub struct UpstreamError {
    pub(super) addr: SocketAddr,
    pub(super) kind: UpstreamErrorKind,
}

#[derive(Debug)]
pub(super) enum UpstreamErrorKind {
    Timeout(Duration),
    Io(io::Error),
    Protocol(&'static str),
}

impl UpstreamError {
    /// 504 for a timeout, 502 otherwise.
    pub fn status(&self) -> u16 {
        match self.kind {
            UpstreamErrorKind::Timeout(_) => 504,
            _ => 502,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            UpstreamErrorKind::Timeout(t) => write!(f, "{} sent no answer within {t:?}", self.addr),
            UpstreamErrorKind::Io(e) => write!(f, "{}: {e}", self.addr),
            UpstreamErrorKind::Protocol(m) => write!(f, "{}: {m}", self.addr),
        }
    }
}

impl std::error::Error for UpstreamError {}
