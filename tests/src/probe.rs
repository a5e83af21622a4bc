//! A UDP path from the client namespace to one port of the server, the
//! cheapest way to see from outside whether a fault is in force right now
//! and when it came into force or lifted.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use crate::{CLIENT_V4, SERVER_V4, Topology, force_rcvbuf, net::RecvRetry};

/// A UDP path from the client namespace to one port of the server's IPv4
/// address, to see whether a fault is in force: datagrams sent while it is
/// vanish, the others arrive.
pub struct UdpPath {
    pub tx: UdpSocket,
    pub rx: UdpSocket,
    pub to: SocketAddr,
}

impl UdpPath {
    pub fn new(topo: &Topology, port: u16) -> Self {
        let to = SocketAddr::new(SERVER_V4, port);
        let rx = crate::udp_bind(&topo.server, to);
        force_rcvbuf(rx.as_fd(), 8 << 20);
        let tx = crate::udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
        UdpPath { tx, rx, to }
    }

    /// Sends `n` datagrams of `len` bytes of payload.
    pub fn send(&self, n: usize, len: usize) {
        let payload = vec![b'x'; len];
        for _ in 0..n {
            self.tx.send_to(&payload, self.to).unwrap();
        }
    }

    /// Counts the datagrams that arrive until none has for 300 ms.
    pub fn drain(&self) -> usize {
        crate::count_datagrams(&self.rx, usize::MAX, Duration::from_millis(300)).len()
    }

    /// Sends `n` small datagrams and returns how many arrived.
    pub fn probe(&self, n: usize) -> usize {
        self.drain();
        self.send(n, 16);
        self.drain()
    }

    /// Sends one datagram every 50 ms until one arrives or `deadline`
    /// passes; returns when the first one that arrived was sent.
    pub fn wait_flowing(&self, deadline: Instant) -> Option<Instant> {
        self.drain();
        self.rx
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let sent = Instant::now();
            self.tx.send_to(b"probe", self.to).unwrap();
            if self.rx.recv_retry(&mut buf).is_ok() {
                return Some(sent);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Like [`UdpPath::wait_flowing`], for the fault coming (back) into
    /// force: returns when the first probe that vanished was sent.
    pub fn wait_blocked(&self, deadline: Instant) -> Option<Instant> {
        self.drain();
        self.rx
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let sent = Instant::now();
            self.tx.send_to(b"probe", self.to).unwrap();
            if self.rx.recv_retry(&mut buf).is_err() {
                return Some(sent);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }
}
