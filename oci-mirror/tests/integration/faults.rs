//! Fault injection: a loopback proxy in front of the source registry that
//! answers 500s, 429 with `Retry-After`, drops a blob mid-body or corrupts a
//! byte. The copy either completes with correct digests or fails with a
//! clear error — and the destination never has a tag naming incomplete
//! content; a re-run then completes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_oci_mirror::{CopyOptions, Error, ImageLocation, RegistryClient, RegistryConfig, copy};

use crate::peers::{Layout, Registry, raw_manifest, scratch, skopeo, tools};

/// What the proxy does to the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Answer this many requests with 500.
    ServerErrors(usize),
    /// Answer this many requests with 429, `Retry-After: 1`.
    RateLimited(usize),
    /// Send half of this many blob bodies, then close.
    DropMidBlob(usize),
    /// Flip one byte in the first blob body.
    CorruptBlob,
    /// Answer this many blob uploads (PUT/PATCH with the blob) with 500.
    FailUploads(usize),
}

struct Proxy {
    host: String,
    fault: Arc<Mutex<Fault>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request (head and a Content-Length body).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
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
    Some((head, body))
}

fn serve(client: TcpStream, upstream: &str, fault: &Mutex<Fault>, hits: &AtomicUsize) {
    client.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while let Some((head, body)) = read_request(&mut reader) {
        hits.fetch_add(1, Ordering::SeqCst);
        let is_blob_get = head.starts_with("GET ") && head.contains("/blobs/sha256:");
        let is_upload = (head.starts_with("PUT ") || head.starts_with("PATCH "))
            && head.contains("/blobs/uploads/");
        let canned = {
            let mut f = fault.lock().unwrap();
            match *f {
                Fault::FailUploads(n) if n > 0 && is_upload => {
                    *f = if n > 1 {
                        Fault::FailUploads(n - 1)
                    } else {
                        Fault::None
                    };
                    Some("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                }
                Fault::ServerErrors(n) if n > 0 => {
                    *f = if n > 1 {
                        Fault::ServerErrors(n - 1)
                    } else {
                        Fault::None
                    };
                    Some("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                }
                Fault::RateLimited(n) if n > 0 => {
                    *f = if n > 1 {
                        Fault::RateLimited(n - 1)
                    } else {
                        Fault::None
                    };
                    Some(
                        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
                    )
                }
                _ => None,
            }
        };
        if let Some(response) = canned {
            if client.write_all(response.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        // Forward with `Connection: close` and read the answer to EOF.
        let head = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .collect::<Vec<_>>()
            .join("\r\n");
        let head = format!("{}\r\nConnection: close\r\n\r\n", head.trim_end());
        let Ok(mut up) = TcpStream::connect(upstream) else {
            return;
        };
        if up.write_all(head.as_bytes()).is_err() || up.write_all(&body).is_err() {
            return;
        }
        let mut response = Vec::new();
        if up.read_to_end(&mut response).is_err() {
            return;
        }
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(response.len(), |p| p + 4);
        let mut f = fault.lock().unwrap();
        let ok = response.starts_with(b"HTTP/1.1 200");
        match *f {
            Fault::DropMidBlob(n) if is_blob_get && ok && response.len() > split + 2 => {
                *f = if n > 1 {
                    Fault::DropMidBlob(n - 1)
                } else {
                    Fault::None
                };
                drop(f);
                let half = split + (response.len() - split) / 2;
                let _ = client.write_all(&response[..half]);
                return; // close mid-body
            }
            Fault::CorruptBlob if is_blob_get && ok && response.len() > split => {
                *f = Fault::None;
                let i = split + (response.len() - split) / 3;
                response[i] ^= 0x55;
            }
            _ => {}
        }
        drop(f);
        // The answer carries the registry's `Connection: close`, so the
        // client opens a new connection for its next request.
        if client.write_all(&response).is_err() {
            return;
        }
    }
}

fn proxy(upstream: String) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let fault = Arc::new(Mutex::new(Fault::None));
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (f, h, s) = (fault.clone(), hits.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut workers = Vec::new();
        while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).ok();
                    let (f, h, up) = (f.clone(), h.clone(), upstream.clone());
                    workers.push(std::thread::spawn(move || serve(conn, &up, &f, &h)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        drop(workers);
    });
    Proxy {
        host,
        fault,
        hits,
        stop,
        thread: Some(thread),
    }
}

fn client(host: &str, retry_rate_limited: bool) -> RegistryClient {
    let mut cfg = RegistryConfig::new(host);
    cfg.insecure = true;
    cfg.retry_rate_limited = retry_rate_limited;
    RegistryClient::new(cfg).unwrap()
}

fn tag_absent(image: &str) -> bool {
    !skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ])
    .status
    .success()
}

#[test]
fn faults_end_in_a_complete_copy_or_a_clear_error_never_a_dangling_tag() {
    if !tools() {
        return;
    }
    let dir = scratch("faults");
    let (a, b) = (
        Registry::start(&dir.join("a")),
        Registry::start(&dir.join("b")),
    );
    let layout = Layout::new(&dir.join("layout"));
    let m = layout.image(7, &[2 << 20, 1 << 20, 300 << 10], "amd64");
    layout.tag("v1", &[(m.0.clone(), m.1, "amd64")]);
    layout.push("v1", &format!("{}/src/app:v1", a.host), false);
    let want = raw_manifest(&format!("{}/src/app:v1", a.host));

    let p = proxy(a.host.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let src: ImageLocation = format!("{}/src/app:v1", p.host).parse().unwrap();
    let dst_client = client(&b.host, true);
    let run = |tag: &str, retry_429: bool| {
        let dst: ImageLocation = format!("{}/mirror/app:{tag}", b.host).parse().unwrap();
        rt.block_on(copy(
            &client(&p.host, retry_429),
            &src,
            &dst_client,
            &dst,
            &CopyOptions::default(),
        ))
    };

    // 500s and 429s are retried (with Retry-After): the copy completes.
    *p.fault.lock().unwrap() = Fault::ServerErrors(2);
    run("retried-500", true).unwrap();
    assert_eq!(
        raw_manifest(&format!("{}/mirror/app:retried-500", b.host)),
        want
    );
    *p.fault.lock().unwrap() = Fault::RateLimited(1);
    let started = Instant::now();
    run("retried-429", true).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    assert_eq!(
        raw_manifest(&format!("{}/mirror/app:retried-429", b.host)),
        want
    );

    // 429 can fail fast instead, with the status visible.
    *p.fault.lock().unwrap() = Fault::RateLimited(1);
    let err = run("fail-fast", false).unwrap_err();
    assert!(matches!(err, Error::Status { status: 429, .. }), "{err}");
    assert!(tag_absent(&format!("{}/mirror/app:fail-fast", b.host)));
    *p.fault.lock().unwrap() = Fault::None;

    // A blob cut mid-body once: the blob starts over and the copy
    // completes with the right digests.
    *p.fault.lock().unwrap() = Fault::DropMidBlob(1);
    let hits = p.hits.load(Ordering::SeqCst);
    let once: ImageLocation = format!("{}/dropped-once/app:v1", b.host).parse().unwrap();
    let report = rt
        .block_on(copy(
            &client(&p.host, true),
            &src,
            &dst_client,
            &once,
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!(*p.fault.lock().unwrap(), Fault::None, "the drop happened");
    assert_eq!(report.blobs_copied, 4, "{report:?}");
    assert_eq!(
        raw_manifest(&format!("{}/dropped-once/app:v1", b.host)),
        want
    );
    assert!(p.hits.load(Ordering::SeqCst) > hits + 4);

    // The destination failing an upload (500 on the PUT that carries the
    // blob): the blob starts over in a new session and the copy completes.
    let q = proxy(b.host.clone());
    *q.fault.lock().unwrap() = Fault::FailUploads(1);
    let via: ImageLocation = format!("{}/upload-failed/app:v1", q.host).parse().unwrap();
    let report = rt
        .block_on(copy(
            &client(&p.host, true),
            &src,
            &client(&q.host, true),
            &via,
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!(
        *q.fault.lock().unwrap(),
        Fault::None,
        "the upload failed once"
    );
    assert_eq!(report.blobs_copied, 4, "{report:?}");
    assert_eq!(
        raw_manifest(&format!("{}/upload-failed/app:v1", b.host)),
        want
    );
    drop(q);

    // A blob cut on every attempt, and a corrupted blob: clear errors, no
    // tag.
    for (fault, tag) in [
        (Fault::DropMidBlob(usize::MAX), "dropped"),
        (Fault::CorruptBlob, "corrupt"),
    ] {
        // A fresh destination repository, so the blob must really move.
        let dst: ImageLocation = format!("{}/{tag}/app:v1", b.host).parse().unwrap();
        *p.fault.lock().unwrap() = fault;
        let err = rt
            .block_on(copy(
                &client(&p.host, true),
                &src,
                &dst_client,
                &dst,
                &CopyOptions {
                    jobs: 1,
                    ..CopyOptions::default()
                },
            ))
            .unwrap_err();
        let text = err.to_string();
        match fault {
            Fault::CorruptBlob => assert!(
                matches!(err, Error::DigestMismatch { .. }),
                "corruption must be a digest mismatch: {text}"
            ),
            _ => assert!(
                matches!(err, Error::Request { .. }),
                "a blob cut on every attempt is a transfer error: {text}"
            ),
        }
        assert!(
            tag_absent(&format!("{}/{tag}/app:v1", b.host)),
            "{tag}: no tag after a failed copy"
        );
        // Re-running without the fault completes and resumes.
        *p.fault.lock().unwrap() = Fault::None;
        rt.block_on(copy(
            &client(&p.host, true),
            &src,
            &dst_client,
            &dst,
            &CopyOptions::default(),
        ))
        .unwrap();
        assert_eq!(raw_manifest(&format!("{}/{tag}/app:v1", b.host)), want);
    }
    assert!(p.hits.load(Ordering::SeqCst) > 10);
    drop(p);
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}
