//! [`TcpProxy`]: a plain TCP forwarder on `127.0.0.1:0` that a test can cut
//! and restore, to make a server look dead to one client only (e.g. NATS to
//! one coordinator of a [`Cluster`](crate::Cluster)).
//!
//! # Contract
//! - Every accepted connection is forwarded byte for byte to the upstream
//!   address, both ways, on threads of its own (no runtime needed: it works
//!   inside or outside tokio).
//! - [`TcpProxy::cut`] shuts down every open connection (both sides see EOF)
//!   and, until [`TcpProxy::restore`], accepts new connections only to close
//!   them at once, before a byte passes: a NATS client sees the server hang
//!   up before its `INFO`, a failed connect, and keeps retrying.
//! - When the upstream refuses, the accepted connection is closed.
//! - Dropping the handle stops listening and closes every connection.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{HarnessError, Result};

/// State shared with the accept and copy threads.
#[derive(Default)]
struct Shared {
    cut: AtomicBool,
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Connections forwarded (accepted while not cut, upstream reached).
    forwarded: AtomicU64,
    /// Accepted while cut, closed at once.
    refused: AtomicU64,
    /// Open connections: the client side and the upstream side.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
}

impl Shared {
    fn close_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
        for (client, upstream) in open.values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

/// A cuttable TCP forwarder; see the module documentation.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<TcpProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io("binding 127.0.0.1:0 for a TCP proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the TCP proxy's address", e))?;
        let shared = Arc::new(Shared::default());
        let accept = std::thread::Builder::new()
            .name(format!("tcp-proxy-{}", addr.port()))
            .spawn({
                let shared = shared.clone();
                move || accept_loop(&listener, upstream, &shared)
            })
            .map_err(|e| HarnessError::io("starting the TCP proxy's thread", e))?;
        Ok(TcpProxy {
            addr,
            upstream,
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Where connections go.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Closes every open connection and refuses new ones (accepted and
    /// closed at once) until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Connections forwarded so far (accepted while not cut, upstream reached).
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections accepted while cut (closed at once).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.shared.close_all();
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("tcp-proxy-conn".into())
            .spawn(move || forward(client, upstream, &shared));
    }
}

/// Copies both ways until either side ends or the proxy cuts it.
fn forward(client: TcpStream, upstream: SocketAddr, shared: &Shared) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_c), Ok(server_c), Ok(client_r), Ok(server_w)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    {
        let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        // A cut between the accept and here: do not forward.
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        open.insert(id, (client_c, server_c));
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let back = std::thread::Builder::new()
        .name("tcp-proxy-back".into())
        .spawn(move || pump(server, client));
    pump(client_r, server_w);
    if let Ok(back) = back {
        let _ = back.join();
    }
    shared.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
}

/// Copies `from` into `to` until EOF or an error, then closes both
/// directions, so the other pump ends too.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;

    /// A line echo server: answers each line with `echo: <line>`.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut writer = conn.try_clone().unwrap();
                    let reader = std::io::BufReader::new(conn);
                    for line in reader.lines() {
                        let Ok(line) = line else { break };
                        if writeln!(writer, "echo: {line}").is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
        writeln!(stream, "{line}")?;
        let mut reader = std::io::BufReader::new(stream.try_clone()?);
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        Ok(answer)
    }

    fn connect(proxy: &TcpProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    }

    #[test]
    fn bytes_pass_cut_closes_and_refuses_restore_forwards_again() {
        let proxy = TcpProxy::start(echo_server()).unwrap();
        let mut a = connect(&proxy);
        assert_eq!(round_trip(&mut a, "one").unwrap(), "echo: one\n");
        // Bytes pass both ways in bulk too.
        let big = "x".repeat(200_000);
        assert_eq!(round_trip(&mut a, &big).unwrap(), format!("echo: {big}\n"));
        assert_eq!(proxy.forwarded(), 1);

        proxy.cut();
        assert!(proxy.is_cut());
        // The open connection sees EOF (or a reset), not an answer.
        let mut buf = [0u8; 16];
        let _ = writeln!(a, "two");
        match a.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("got {n} bytes through a cut proxy"),
        }
        // A new connection is closed before anything passes.
        let mut b = connect(&proxy);
        let _ = writeln!(b, "three");
        match b.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("got {n} bytes through a cut proxy"),
        }
        assert_eq!(proxy.forwarded(), 1);
        assert!(proxy.refused() >= 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while proxy.open_connections() > 0 {
            assert!(std::time::Instant::now() < deadline, "connections left open");
            std::thread::sleep(Duration::from_millis(20));
        }

        proxy.restore();
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, "four").unwrap(), "echo: four\n");
        assert_eq!(proxy.forwarded(), 2);
    }

    #[test]
    fn a_refusing_upstream_closes_the_connection() {
        // A port nothing listens on (bound, then released).
        let dead = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap()
        };
        let proxy = TcpProxy::start(dead).unwrap();
        let mut a = connect(&proxy);
        let mut buf = [0u8; 8];
        match a.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("got {n} bytes from nowhere"),
        }
        assert_eq!(proxy.forwarded(), 0);
    }
}
