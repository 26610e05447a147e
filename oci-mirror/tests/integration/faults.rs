//! Fault injection: a loopback proxy in front of the source registry that
//! answers 500s, 429 with `Retry-After`, drops a blob mid-body or corrupts a
//! byte. The copy either completes with correct digests or fails with a
//! clear error — and the destination never has a tag naming incomplete
//! content; a re-run then completes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_oci_mirror::{
    CopyOptions, Error, ImageLocation, Progress, RegistryClient, RegistryConfig, copy,
};

use crate::peers::{Layout, Registry, raw_manifest, scratch, skopeo, tools};
use crate::proxy::{Hook, Proxy, Request, body_start};

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
    /// Let this many blob uploads through, answer the next with 500.
    FailUploadAfter(usize),
}

/// The fault to inject, how many requests the proxy has seen, and how
/// many blob uploads with a body arrived whole.
struct Faults {
    fault: Mutex<Fault>,
    hits: AtomicUsize,
    uploads: AtomicUsize,
}

const SERVER_ERROR: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";

/// `fault` with one fewer request to go.
fn spend(fault: &mut Fault, next: impl FnOnce(usize) -> Fault, n: usize) {
    *fault = if n > 1 { next(n - 1) } else { Fault::None };
}

impl Hook for Faults {
    fn answer(&self, request: &Request) -> Option<Vec<u8>> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let is_upload = matches!(request.method(), "PUT" | "PATCH")
            && request.target().contains("/blobs/uploads/");
        if is_upload && !request.body.is_empty() {
            self.uploads.fetch_add(1, Ordering::SeqCst);
        }
        let mut f = self.fault.lock().unwrap();
        match *f {
            Fault::FailUploads(n) if n > 0 && is_upload => {
                spend(&mut f, Fault::FailUploads, n);
                Some(SERVER_ERROR.to_vec())
            }
            Fault::FailUploadAfter(n) if is_upload => {
                if n == 0 {
                    *f = Fault::None;
                    return Some(SERVER_ERROR.to_vec());
                }
                *f = Fault::FailUploadAfter(n - 1);
                None
            }
            Fault::ServerErrors(n) if n > 0 => {
                spend(&mut f, Fault::ServerErrors, n);
                Some(SERVER_ERROR.to_vec())
            }
            Fault::RateLimited(n) if n > 0 => {
                spend(&mut f, Fault::RateLimited, n);
                Some(
                    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
                        .to_vec(),
                )
            }
            _ => None,
        }
    }

    fn relay(&self, request: &Request, mut response: Vec<u8>) -> (Vec<u8>, bool) {
        let is_blob_get = request.method() == "GET" && request.target().contains("/blobs/sha256:");
        let split = body_start(&response);
        let ok = response.starts_with(b"HTTP/1.1 200");
        let mut f = self.fault.lock().unwrap();
        match *f {
            Fault::DropMidBlob(n) if is_blob_get && ok && response.len() > split + 2 => {
                spend(&mut f, Fault::DropMidBlob, n);
                // Half the body, then the connection closes.
                response.truncate(split + (response.len() - split) / 2);
                return (response, false);
            }
            Fault::CorruptBlob if is_blob_get && ok && response.len() > split => {
                *f = Fault::None;
                let i = split + (response.len() - split) / 3;
                response[i] ^= 0x55;
            }
            _ => {}
        }
        (response, true)
    }
}

fn proxy(upstream: String) -> Proxy<Faults> {
    Proxy::start(
        &upstream,
        Faults {
            fault: Mutex::new(Fault::None),
            hits: AtomicUsize::new(0),
            uploads: AtomicUsize::new(0),
        },
    )
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

    // The destination failing an upload (500 on the request that carries
    // the blob): a whole-blob PUT starts over in a new session. In chunks,
    // one blob at a time, the first chunk failing starts the blob over; a
    // later one goes again on its own, the registry holding exactly the
    // chunks before it.
    let q = proxy(b.host.clone());
    let chunk = 700_000;
    for (i, (fault, chunked, resumed_from)) in [
        (Fault::FailUploads(1), false, 0),
        (Fault::FailUploadAfter(0), true, 0),
        (Fault::FailUploadAfter(1), true, chunk),
        (Fault::FailUploadAfter(2), true, 2 * chunk),
    ]
    .into_iter()
    .enumerate()
    {
        let restarts = Arc::new(Mutex::new(Vec::new()));
        let seen = restarts.clone();
        let mut options = CopyOptions {
            progress: Some(Arc::new(move |event: &Progress| {
                if let Progress::BlobRestarted { from, .. } = event {
                    seen.lock().unwrap().push(*from);
                }
            })),
            ..CopyOptions::default()
        };
        if chunked {
            options.jobs = 1;
            options.chunk_threshold = 1 << 20;
            options.chunk_size = chunk;
        }
        *q.fault.lock().unwrap() = fault;
        let repo = format!("upload-failed-{i}/app:v1");
        let via: ImageLocation = format!("{}/{repo}", q.host).parse().unwrap();
        let report = rt
            .block_on(copy(
                &client(&p.host, true),
                &src,
                &client(&q.host, true),
                &via,
                &options,
            ))
            .unwrap();
        assert_eq!(*q.fault.lock().unwrap(), Fault::None, "{fault:?} happened");
        assert_eq!(*restarts.lock().unwrap(), [resumed_from], "{fault:?}");
        assert_eq!(report.blobs_copied, 4, "{report:?}");
        assert_eq!(raw_manifest(&format!("{}/{repo}", b.host)), want);
    }
    drop(q);

    // A blob cut on every attempt, and a corrupted blob: clear errors, no
    // tag.
    for (fault, tag) in [
        (Fault::DropMidBlob(usize::MAX), "dropped"),
        (Fault::CorruptBlob, "corrupt"),
    ] {
        // A fresh destination repository, so the blob must really move;
        // through a proxy that counts the uploads arriving whole.
        let watch = proxy(b.host.clone());
        let dst: ImageLocation = format!("{}/{tag}/app:v1", watch.host).parse().unwrap();
        *p.fault.lock().unwrap() = fault;
        let err = rt
            .block_on(copy(
                &client(&p.host, true),
                &src,
                &client(&watch.host, true),
                &dst,
                &CopyOptions {
                    jobs: 1,
                    ..CopyOptions::default()
                },
            ))
            .unwrap_err();
        let text = err.to_string();
        match fault {
            Fault::CorruptBlob => {
                assert!(
                    matches!(err, Error::DigestMismatch { .. }),
                    "corruption must be a digest mismatch: {text}"
                );
                // Caught before its last bytes went out: the destination
                // never had all of it, whether or not it checks digests.
                assert_eq!(watch.uploads.load(Ordering::SeqCst), 0);
            }
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
