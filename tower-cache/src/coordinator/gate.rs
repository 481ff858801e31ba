//! The checks a frame passes where a bus receives it, before any queue.

use std::fmt;
use std::sync::atomic::Ordering;

use super::*;

/// A coordinator's checks on a frame where a bus receives it, before any queue: the
/// signature, the replay window, the clock skew bound, the sender's incarnation and
/// sequence number (a frame already taken is a duplicate), and how many of the sender's
/// frames are waiting (at most 256 per sender, 4,096 in all).
///
/// Cloning shares the gate; it holds the coordinator weakly (a gate of a coordinator that
/// stopped admits everything, as no gate would).
#[derive(Clone)]
pub struct FrameGate {
    pub(super) shared: std::sync::Weak<Shared>,
}

impl fmt::Debug for FrameGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameGate").finish_non_exhaustive()
    }
}

/// What a [`FrameGate`] makes of a frame.
#[derive(Debug)]
#[non_exhaustive]
pub enum Admission {
    /// A frame to queue for the coordinator: keep the ticket with it until the
    /// coordinator has taken it (it holds the sender's place in the bound on waiting
    /// frames).
    New(AdmissionTicket),
    /// Taken already (a retry or a replay), or the node's own: acknowledge it, queue
    /// nothing.
    Duplicate,
    /// Not signed with the shared secret, or malformed.
    Unsigned,
    /// Signed, but never to be taken: older than the replay window, further ahead than the
    /// skew bound, or from an earlier start of its sender.
    Stale,
    /// Too many of this sender's frames (or of all senders') are waiting: ask again later.
    Busy,
}

/// A frame's place in a [`FrameGate`]'s bound on waiting frames; dropping it frees it.
pub struct AdmissionTicket {
    shared: std::sync::Weak<Shared>,
    node: u64,
}

impl fmt::Debug for AdmissionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionTicket")
            .field("node", &self.node)
            .finish()
    }
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        if let Some(sh) = self.shared.upgrade() {
            let mut gate = lock(&sh.gate);
            gate.waiting = gate.waiting.saturating_sub(1);
            if let Some(p) = gate.senders.get_mut(&self.node) {
                p.waiting = p.waiting.saturating_sub(1);
            }
        }
    }
}

impl FrameGate {
    /// Checks `frame`; see [`Admission`].
    pub fn admit(&self, frame: &[u8]) -> Admission {
        let Some(sh) = self.shared.upgrade() else {
            return Admission::New(AdmissionTicket {
                shared: std::sync::Weak::new(),
                node: 0,
            });
        };
        let Some(msg) = Message::decode(frame, &sh.secret) else {
            sh.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Admission::Unsigned;
        };
        if msg.node == sh.node {
            if !msg.is_digest() {
                sh.stats.own.fetch_add(1, Ordering::Relaxed);
            }
            return Admission::Duplicate;
        }
        if let Some(refused) = sh.refuse_by_time(&msg) {
            refused.fetch_add(1, Ordering::Relaxed);
            return Admission::Stale;
        }
        let mut gate = lock(&sh.gate);
        if gate.waiting >= WAITING {
            sh.stats.busy.fetch_add(1, Ordering::Relaxed);
            return Admission::Busy;
        }
        let tracked = gate.senders.len();
        let mut current_digest = false;
        let verdict = match gate.senders.get_mut(&msg.node) {
            None if tracked >= GATE_SENDERS => {
                // Forget the senders with nothing waiting before refusing a new one.
                gate.senders.retain(|_, p| p.waiting > 0);
                if gate.senders.len() >= GATE_SENDERS {
                    sh.stats.busy.fetch_add(1, Ordering::Relaxed);
                    return Admission::Busy;
                }
                None
            }
            None => None,
            Some(p) if msg.incarnation < p.incarnation => {
                sh.stats.older_incarnation.fetch_add(1, Ordering::Relaxed);
                Some(Admission::Stale)
            }
            Some(p) if msg.incarnation == p.incarnation && msg.seq <= p.seq => {
                if msg.is_digest() {
                    // Nothing missed: the usual digest, not a duplicate.
                    sh.stats.digests_received.fetch_add(1, Ordering::Relaxed);
                    current_digest = true;
                } else {
                    sh.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Some(Admission::Duplicate)
            }
            Some(p) if p.waiting >= WAITING_PER_SENDER => {
                sh.stats.busy.fetch_add(1, Ordering::Relaxed);
                Some(Admission::Busy)
            }
            Some(p) => {
                p.incarnation = msg.incarnation;
                p.seq = msg.seq;
                p.waiting += 1;
                None
            }
        };
        if let Some(v) = verdict {
            drop(gate);
            if current_digest {
                // Queued for no one, but the sender was heard from.
                sh.heard(&msg);
            }
            return v;
        }
        gate.senders.entry(msg.node).or_insert(GateSender {
            incarnation: msg.incarnation,
            seq: msg.seq,
            waiting: 1,
        });
        gate.waiting += 1;
        Admission::New(AdmissionTicket {
            shared: self.shared.clone(),
            node: msg.node,
        })
    }
}
