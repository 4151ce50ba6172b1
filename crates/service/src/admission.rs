//! Who gets an association slot: per-address limits, and refusals that a
//! peer can read.
//!
//! The node has `max_associations` slots and a queue as long. Without a
//! limit per address, one host that opens idle connections (a misconfigured
//! modality, or anyone on the network) fills both and every other peer is
//! refused until the idle ones time out. So each address may hold at most
//! [`crate::config::Node::limit_for`] connections at once, counted from
//! accept until the connection ends ([`HostSlot`] gives its place back when
//! dropped, wherever that happens). A connection over its address's limit,
//! or over the node's, is answered at once with an A-ASSOCIATE-RJ (PS3.8
//! 9.3.4: rejected-transient, by the service provider, for the reason
//! given) and closed: the peer's log says why instead of a reset.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections open (from accept to their end) per address.
#[derive(Default)]
pub struct PerHost {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count; released on drop.
pub struct HostSlot {
    hosts: Arc<PerHost>,
    ip: IpAddr,
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut open = self.hosts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl PerHost {
    /// A place for one more connection from `ip`, or the number already
    /// open from it when `limit` is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Result<HostSlot, usize> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return Err(*n);
        }
        *n += 1;
        Ok(HostSlot {
            hosts: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// Why a connection is refused before its association is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address has as many connections as it may have.
    AddressLimit,
    /// Every slot is busy and the queue is full.
    Busy,
}

impl Refusal {
    /// The A-ASSOCIATE-RJ reason (source 3, service provider, presentation
    /// related; PS3.8 table 9-21): 2 local-limit-exceeded, 1
    /// temporary-congestion.
    fn reason(self) -> u8 {
        match self {
            Refusal::AddressLimit => 2,
            Refusal::Busy => 1,
        }
    }

    /// The A-ASSOCIATE-RJ PDU: type 3, length 4, result 2 (rejected
    /// transient), source 3, reason.
    pub fn pdu(self) -> [u8; 10] {
        [0x03, 0, 0, 0, 0, 4, 0, 2, 3, self.reason()]
    }
}

/// Refused connections still being closed politely, at most this many at
/// once (beyond that they are closed at once).
const MAX_LINGERING: usize = 256;
/// How long a refused connection may take to read its refusal.
const LINGER: Duration = Duration::from_millis(500);

/// Closes refused connections after their A-ASSOCIATE-RJ: one thread for
/// all of them, reading (and discarding) what each peer still sends until
/// it closes or [`LINGER`] passes. Closing a socket with unread input makes
/// the system send a reset, which can destroy the refusal before the peer
/// has read it.
pub struct Refuser {
    tx: std::sync::mpsc::SyncSender<TcpStream>,
}

impl Refuser {
    pub fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<TcpStream>(MAX_LINGERING);
        std::thread::spawn(move || {
            let mut lingering: Vec<(TcpStream, Instant)> = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let next = if lingering.is_empty() {
                    match rx.recv() {
                        Ok(s) => Some(s),
                        Err(_) => return,
                    }
                } else {
                    rx.recv_timeout(Duration::from_millis(10)).ok()
                };
                if let Some(s) = next {
                    if s.set_nonblocking(true).is_ok() {
                        lingering.push((s, Instant::now()));
                    }
                }
                lingering.retain_mut(|(s, since)| {
                    if since.elapsed() > LINGER {
                        return false;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                });
            }
        });
        Self { tx }
    }

    /// Sends the refusal and lets the connection close politely.
    pub fn refuse(&self, mut stream: TcpStream, why: Refusal) {
        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
        if stream.write_all(&why.pdu()).is_err() {
            return;
        }
        let _ = stream.shutdown(Shutdown::Write);
        // Full: the connection is closed now, the refusal already sent.
        let _ = self.tx.try_send(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_address_are_counted_and_given_back() {
        let hosts = Arc::new(PerHost::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let held: Vec<HostSlot> = (0..4).filter_map(|_| hosts.admit(a, 4).ok()).collect();
        assert_eq!(held.len(), 4);
        assert_eq!(hosts.admit(a, 4).err(), Some(4));
        assert!(hosts.admit(b, 4).is_ok(), "another address is not limited");
        drop(held);
        assert_eq!(hosts.open_from(a), 0);
        assert!(hosts.admit(a, 4).is_ok());
    }

    #[test]
    fn the_refusal_is_an_associate_rj() {
        // PS3.8 9.3.4: type 03H, reserved, length 4, reserved, result,
        // source, reason.
        assert_eq!(Refusal::AddressLimit.pdu(), [3, 0, 0, 0, 0, 4, 0, 2, 3, 2]);
        assert_eq!(Refusal::Busy.pdu()[9], 1);
    }
}
