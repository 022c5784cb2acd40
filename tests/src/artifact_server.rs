//! An HTTP/1.1 artifact server for download tests, able to misbehave on purpose.
//!
//! It serves in-memory files on a free port of 127.0.0.1 from its own thread and
//! runtime (so it outlives any one test runtime), honours `Range: bytes=` with 206 and
//! `Content-Range`, and follows a fault plan that tests change while it runs: the next
//! N requests (or every request until cleared) can get an error status, a body cut by
//! a reset or an orderly close, corrupt bytes, no answer at all, and more. Every
//! request is logged, with its `Range` header and the fault it met, so tests can
//! assert that a resume happened. Each connection serves one request
//! (`Connection: close`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A misbehaviour for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a short text body.
    Status(u16),
    /// Send the headers (the full `Content-Length`) and this many body bytes, then
    /// reset the connection.
    CutAfter(usize),
    /// Send the headers (the full `Content-Length`) and this many body bytes, then
    /// close the connection in an orderly way.
    Truncate(usize),
    /// Serve the body with one byte flipped (same length).
    Corrupt,
    /// Read the request and never answer (until the server is dropped).
    Hang,
    /// Send the headers (the full `Content-Length`) and this many body bytes, then
    /// stall with the connection open (until the server is dropped).
    StallAfter(usize),
    /// Ignore any `Range` header: answer 200 with the whole file.
    IgnoreRange,
    /// Omit `Content-Length`: the body ends when the connection closes.
    NoLength,
    /// Send the headers, then one body byte per interval, forever (a trickle that
    /// never trips an idle timeout).
    Trickle(std::time::Duration),
    /// Send the body at this many bytes per second (a slow origin).
    Throttle(u64),
    /// Answer `302 Found` with this `Location`.
    Redirect(String),
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, ...
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The fault this request met, if any.
    pub fault: Option<Fault>,
}

#[derive(Debug, Default)]
struct Plan {
    next: VecDeque<Fault>,
    always: Option<Fault>,
}

#[derive(Debug, Default)]
struct State {
    files: Mutex<HashMap<String, Vec<u8>>>,
    plan: Mutex<Plan>,
    log: Mutex<Vec<Request>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running artifact server; dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct ArtifactServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArtifactServer {
    /// Starts a server with no files on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
    }

    /// Starts a server with no files on `listener` (e.g. one bound in a network
    /// namespace by [`crate::netns::Net::listen`]).
    pub fn start_on(listener: std::net::TcpListener) -> Self {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let state = Arc::new(State::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = state.clone();
        let thread = std::thread::Builder::new()
            .name("artifact-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                // Dropping the runtime at the end cancels every connection task.
                rt.block_on(serve(listener, serving, stopped));
            })
            .expect("spawn the artifact server thread");
        ArtifactServer { addr, state, stop: Some(stop), thread: Some(thread) }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `bytes` at `path` (replacing what was there).
    pub fn put(&self, path: &str, bytes: impl Into<Vec<u8>>) {
        lock(&self.state.files).insert(path.to_string(), bytes.into());
    }

    /// Stops serving `path` (404 from now on).
    pub fn remove(&self, path: &str) {
        lock(&self.state.files).remove(path);
    }

    /// The next `n` requests meet `fault` (after the faults already queued).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        lock(&self.state.plan).next.extend(std::iter::repeat_n(fault, n));
    }

    /// Every request meets `fault` once the queue of [`fail_next`](Self::fail_next)
    /// faults is empty, until [`clear_faults`](Self::clear_faults).
    pub fn fail_always(&self, fault: Fault) {
        lock(&self.state.plan).always = Some(fault);
    }

    /// Removes every queued and standing fault.
    pub fn clear_faults(&self) {
        *lock(&self.state.plan) = Plan::default();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state.log).clone()
    }

    /// The number of requests received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.state.log).len()
    }

    /// The `Range` headers received so far, in order.
    pub fn ranges(&self) -> Vec<String> {
        lock(&self.state.log).iter().filter_map(|r| r.range.clone()).collect()
    }
}

impl Drop for ArtifactServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, state: Arc<State>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                if let Ok((socket, _)) = accepted {
                    tokio::spawn(handle(socket, state.clone()));
                }
            }
        }
    }
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    range: Option<String>,
}

async fn read_head(socket: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let range = lines.filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim().eq_ignore_ascii_case("range"));
    Some(Head { method, path, range: range.map(|(_, v)| v.trim().to_string()) })
}

/// What to send: status, headers, body.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, text: &str) -> Self {
        Response { status, headers: vec![("Content-Type", "text/plain".into())], body: text.as_bytes().to_vec() }
    }

    fn head(&self, with_length: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\nConnection: close\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if with_length {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// `bytes=a-`, `bytes=a-b` or `bytes=-n` against a file of `len` bytes: the
/// inclusive range to send, or `Err(())` when it cannot be satisfied.
fn parse_range(value: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (first, last) = match (a.trim(), b.trim()) {
        ("", n) => (len.saturating_sub(n.parse().ok()?), len.checked_sub(1)?),
        (a, "") => (a.parse().ok()?, len.saturating_sub(1)),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(len.saturating_sub(1))),
    };
    Some(if first >= len || last < first { Err(()) } else { Ok((first, last)) })
}

fn respond(file: Option<&Vec<u8>>, range: Option<&str>) -> Response {
    let Some(file) = file else { return Response::text(404, "no such artifact\n") };
    match range.and_then(|r| parse_range(r, file.len())) {
        None => Response { status: 200, headers: vec![("Accept-Ranges", "bytes".into())], body: file.clone() },
        Some(Ok((first, last))) => Response {
            status: 206,
            headers: vec![("Content-Range", format!("bytes {first}-{last}/{}", file.len()))],
            body: file[first..=last].to_vec(),
        },
        Some(Err(())) => {
            let mut r = Response::text(416, "range not satisfiable\n");
            r.headers.push(("Content-Range", format!("bytes */{}", file.len())));
            r
        }
    }
}

async fn handle(mut socket: TcpStream, state: Arc<State>) {
    let Some(head) = read_head(&mut socket).await else { return };
    let fault = {
        let mut plan = lock(&state.plan);
        plan.next.pop_front().or_else(|| plan.always.clone())
    };
    lock(&state.log).push(Request {
        method: head.method.clone(),
        path: head.path.clone(),
        range: head.range.clone(),
        fault: fault.clone(),
    });
    let file = lock(&state.files).get(&head.path).cloned();
    let range = if fault == Some(Fault::IgnoreRange) { None } else { head.range.as_deref() };
    let mut response = respond(file.as_ref(), range);
    let _ = match fault {
        None | Some(Fault::IgnoreRange) => send(&mut socket, &response, usize::MAX, true).await,
        Some(Fault::Status(status)) => {
            send(&mut socket, &Response::text(status, "injected fault\n"), usize::MAX, true).await
        }
        Some(Fault::Truncate(n)) => send(&mut socket, &response, n, true).await,
        Some(Fault::CutAfter(n)) => {
            let _ = send(&mut socket, &response, n, true).await;
            let _ = socket.set_zero_linger(); // the drop below resets the connection
            return;
        }
        Some(Fault::Corrupt) => {
            let middle = response.body.len() / 2;
            if let Some(byte) = response.body.get_mut(middle) {
                *byte ^= 0xff;
            }
            send(&mut socket, &response, usize::MAX, true).await
        }
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::StallAfter(n)) => {
            let _ = send(&mut socket, &response, n, true).await;
            std::future::pending().await
        }
        Some(Fault::NoLength) => send(&mut socket, &response, usize::MAX, false).await,
        Some(Fault::Trickle(every)) => {
            let _ = send(&mut socket, &response, 0, true).await;
            for byte in response.body.iter() {
                tokio::time::sleep(every).await;
                if socket.write_all(&[*byte]).await.is_err() {
                    return;
                }
            }
            Ok(())
        }
        Some(Fault::Throttle(rate)) => {
            let _ = send(&mut socket, &response, 0, true).await;
            let chunk = (rate / 20).max(1) as usize;
            for piece in response.body.chunks(chunk) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if socket.write_all(piece).await.is_err() {
                    return;
                }
            }
            Ok(())
        }
        Some(Fault::Redirect(location)) => {
            let mut r = Response::text(302, "moved\n");
            r.headers.push(("Location", location));
            send(&mut socket, &r, usize::MAX, true).await
        }
    };
    let _ = socket.shutdown().await;
}

/// Sends the head and at most `limit` body bytes.
async fn send(socket: &mut TcpStream, response: &Response, limit: usize, with_length: bool) -> std::io::Result<()> {
    socket.write_all(&response.head(with_length)).await?;
    let body = &response.body[..response.body.len().min(limit)];
    socket.write_all(body).await?;
    socket.flush().await
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=4-", 10), Some(Ok((4, 9))));
        assert_eq!(parse_range("bytes=4-5", 10), Some(Ok((4, 5))));
        assert_eq!(parse_range("bytes=4-50", 10), Some(Ok((4, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Some(Ok((7, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse_range("items=1-2", 10), None);
    }
}
