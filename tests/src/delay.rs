//! A delaying TCP proxy: latency where the kernel has no netem.
//!
//! [`DelayProxy::start`] listens on a free port of 127.0.0.1 and forwards every
//! connection to `upstream`, holding each chunk of bytes for a fixed one-way delay
//! in each direction, so a request and its reply pay the delay twice (the round trip
//! grows by `2 × one_way`). Chunks are timestamped when read and written when due,
//! so pipelined traffic is delayed, not serialised: like a long link, not a slow
//! one. It runs on its own thread and runtime (it outlives any one test's runtime);
//! dropping it stops it and closes every connection.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running proxy.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DelayProxy {
    /// Proxies 127.0.0.1:<free port> to `upstream` with `one_way` added each way.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new().name("delay-proxy".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    _ = accept(listener, upstream, one_way) => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(DelayProxy { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, one_way: Duration) {
    while let Ok((down, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(up) = TcpStream::connect(upstream).await else { return };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::join!(pipe(dr, uw, one_way), pipe(ur, dw, one_way));
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once the delayed bytes are out.
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_round_trip_pays_the_delay_both_ways() {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = echo.accept().unwrap();
            let mut buf = [0u8; 4];
            while c.read_exact(&mut buf).is_ok() {
                c.write_all(&buf).unwrap();
            }
        });
        let proxy = DelayProxy::start(upstream, Duration::from_millis(30)).unwrap();
        let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            s.write_all(b"ping").unwrap();
            let mut back = [0u8; 4];
            s.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"ping");
            assert!(t.elapsed() >= Duration::from_millis(60), "round trip {:?}", t.elapsed());
        }
    }
}
