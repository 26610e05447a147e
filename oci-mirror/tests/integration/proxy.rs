//! A loopback HTTP/1.1 proxy in front of a real registry, with a hook that
//! may answer a request itself or change the registry's answer: faults for
//! the fault tests, the referrers API for the referrers tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as the client sent it.
pub(crate) struct Request {
    /// Request line and headers, CRLF-separated, without the blank line.
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The method.
    pub(crate) fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    /// The request target (path and query).
    pub(crate) fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// What a proxy does with each request.
pub(crate) trait Hook: Send + Sync + 'static {
    /// An answer (a whole HTTP response) instead of forwarding.
    fn answer(&self, _request: &Request) -> Option<Vec<u8>> {
        None
    }

    /// The registry's whole `response` to `request`, as the client shall
    /// see it; `false` closes the connection after sending it.
    fn relay(&self, _request: &Request, response: Vec<u8>) -> (Vec<u8>, bool) {
        (response, true)
    }
}

/// A running proxy; dereferences to its hook. Stops when dropped (or
/// after five minutes).
pub(crate) struct Proxy<H> {
    pub(crate) host: String,
    hook: Arc<H>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<H> Deref for Proxy<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hook
    }
}

impl<H> Drop for Proxy<H> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<H: Hook> Proxy<H> {
    /// Listens on a loopback port and forwards to `upstream`.
    pub(crate) fn start(upstream: &str, hook: H) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let hook = Arc::new(hook);
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, upstream) = (hook.clone(), stop.clone(), upstream.to_owned());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).ok();
                        let (h, up) = (h.clone(), upstream.clone());
                        std::thread::spawn(move || serve(conn, &up, &*h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            host,
            hook,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads one request (head and a Content-Length body).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let head = head.trim_end().to_owned();
    Some(Request { head, body })
}

/// The registry's answer to `request`: sent with `Connection: close` and
/// read to the end.
fn forward(upstream: &str, request: &Request) -> Option<Vec<u8>> {
    let head = request
        .head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut up = TcpStream::connect(upstream).ok()?;
    up.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    up.write_all(&request.body).ok()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).ok()?;
    Some(response)
}

fn serve(client: TcpStream, upstream: &str, hook: &dyn Hook) {
    client.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while let Some(request) = read_request(&mut reader) {
        let (response, keep) = match hook.answer(&request) {
            Some(answer) => (answer, true),
            None => {
                let Some(response) = forward(upstream, &request) else {
                    return;
                };
                // The registry's answer carries its `Connection: close`,
                // so the client opens a new connection for its next one.
                hook.relay(&request, response)
            }
        };
        if client.write_all(&response).is_err() || !keep {
            return;
        }
    }
}

/// Where a response's body starts.
pub(crate) fn body_start(response: &[u8]) -> usize {
    response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4)
}
