//! One blob from source to destination: skipped when present (or mounted
//! within a registry), else streamed from a GET into an upload (one PUT, or
//! ranged GETs into PATCHes for large blobs), hashed and counted on the way.
//!
//! Only a failure of a request carrying the body can be helped by starting
//! the blob over (a dropped connection, a 5xx, a 401 of an expired token, a
//! 429 when allowed): the bodiless requests already retried themselves. In
//! a chunked upload only the failed chunk goes again when the registry
//! still holds exactly the chunks before it. A
//! blob longer or shorter than its descriptor, or with another digest, is
//! the source's fault and aborts at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::{Copier, Descriptor, Progress};
use crate::Error;
use crate::client::{backoff, check, retry_after};

/// How one attempt failed.
enum Failed {
    /// Starting the blob over can help (after this long, if the registry
    /// said).
    Retry(Error, Option<Duration>),
    /// It cannot.
    Fatal(Error),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Self::Fatal(e)
    }
}

/// What the body stream saw: bytes hashed and counted, whether the source
/// sent more than the descriptor says or ended early, and the digest of a
/// whole blob that is not the descriptor's. A chunk sent again bumps the
/// generation: a body stream of the failed request that is still being
/// polled then fails instead of counting.
#[derive(Default)]
struct Tally {
    hasher: Sha256,
    seen: u64,
    overflow: bool,
    short: bool,
    mismatch: Option<String>,
    generation: u64,
}

type Shared = Arc<Mutex<Tally>>;

fn lock(tally: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Copier<'_> {
    pub(super) async fn copy_blob(&self, d: &Descriptor) -> Result<(), Error> {
        let present = self.dst.has_blob(self.dst_repo, &d.digest).await?
            || (self.src.host() == self.dst.host() && self.try_mount(&d.digest).await?);
        if present {
            self.skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.report(Progress::BlobSkipped {
                digest: d.digest.clone(),
                size: d.size,
            });
            return Ok(());
        }
        let attempts = self.dst.attempts().max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tally = Shared::default();
            match self.upload_blob(d, &tally).await {
                Ok(()) => break,
                Err(Failed::Retry(_, after)) if attempt < attempts => {
                    self.report(Progress::BlobRestarted {
                        digest: d.digest.clone(),
                        from: 0,
                        bytes: lock(&tally).seen,
                    });
                    tokio::time::sleep(after.unwrap_or_else(|| backoff(attempt))).await;
                }
                Err(Failed::Retry(e, _) | Failed::Fatal(e)) => return Err(e),
            }
        }
        self.copied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.bytes
            .fetch_add(d.size, std::sync::atomic::Ordering::Relaxed);
        self.report(Progress::BlobDone {
            digest: d.digest.clone(),
            size: d.size,
        });
        Ok(())
    }

    /// One attempt: the source (first, so that a failing source opens no
    /// upload session), a new upload session, the transfer. A failed
    /// attempt cancels its session (distribution would keep the partial
    /// data for days).
    async fn upload_blob(&self, d: &Descriptor, tally: &Shared) -> Result<(), Failed> {
        let src_path = format!("/v2/{}/blobs/{}", self.src_repo, d.digest);
        let chunked = d.size > self.chunk_threshold && self.chunk_size > 0;
        let whole = if chunked {
            None
        } else {
            Some(self.get_source(&src_path, None).await?)
        };
        let up_path = format!("/v2/{}/blobs/uploads/", self.dst_repo);
        let start = self
            .dst
            .send(
                "start upload",
                Method::POST,
                &up_path,
                self.dst_repo,
                true,
                &[],
            )
            .await?;
        let start = check(start, "start upload", &self.dst.url(&up_path)).await?;
        let mut location = upload_location(&start, &d.digest)?;
        let result = match whole {
            Some(source) => self.put_whole(d, tally, source, &location).await,
            None => self.put_chunks(d, tally, &src_path, &mut location).await,
        };
        if result.is_err() {
            self.cancel_upload(&location).await;
        }
        result
    }

    /// The whole blob in one PUT.
    async fn put_whole(
        &self,
        d: &Descriptor,
        tally: &Shared,
        source: Response,
        location: &str,
    ) -> Result<(), Failed> {
        let body = self.verifying(source, tally, d.size, d);
        let url = with_digest(&self.dst.url(location), &d.digest);
        let req = self
            .dst
            .http()
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, d.size)
            .body(reqwest::Body::wrap_stream(body));
        let sent = self.dst.execute(req, &url, self.dst_repo, true).await;
        self.settle(d, tally, d.size, sent, "upload blob", &url)
            .await
            .map(drop)
    }

    /// Ranged GETs streamed into PATCHes (memory stays bounded and no
    /// single request carries the blob), then the closing PUT. A chunk
    /// that fails goes again on its own when the registry holds exactly
    /// the chunks before it (the failure wrote nothing: a 5xx, 429 or 401
    /// answer); otherwise the blob starts over.
    async fn put_chunks(
        &self,
        d: &Descriptor,
        tally: &Shared,
        src_path: &str,
        location: &mut String,
    ) -> Result<(), Failed> {
        let mut offset = 0;
        // The hash of the bytes before `offset`, to go back to.
        let mut checkpoint = Sha256::new();
        let mut tries = 0;
        while offset < d.size {
            let end = offset.saturating_add(self.chunk_size).min(d.size);
            match self
                .put_chunk(d, tally, src_path, location, offset, end)
                .await
            {
                Ok(()) => {
                    offset = end;
                    checkpoint = lock(tally).hasher.clone();
                    tries = 0;
                }
                Err(Failed::Retry(e, after)) => {
                    tries += 1;
                    if offset == 0
                        || tries >= self.dst.attempts()
                        || !self.resumable_at(location, offset).await
                    {
                        return Err(Failed::Retry(e, after));
                    }
                    let undone = {
                        let mut t = lock(tally);
                        let undone = t.seen.saturating_sub(offset);
                        t.seen = offset;
                        t.hasher = checkpoint.clone();
                        t.generation += 1;
                        undone
                    };
                    self.report(Progress::BlobRestarted {
                        digest: d.digest.clone(),
                        from: offset,
                        bytes: undone,
                    });
                    tokio::time::sleep(after.unwrap_or_else(|| backoff(tries))).await;
                }
                Err(fatal) => return Err(fatal),
            }
        }
        let url = with_digest(&self.dst.url(location), &d.digest);
        let req = self
            .dst
            .http()
            .put(&url)
            .header(CONTENT_LENGTH, 0)
            .body(Vec::new());
        let sent = self.dst.execute(req, &url, self.dst_repo, true).await;
        self.settle(d, tally, d.size, sent, "upload blob", &url)
            .await
            .map(drop)
    }

    /// Bytes `offset..end` of the blob: a ranged GET into a PATCH.
    async fn put_chunk(
        &self,
        d: &Descriptor,
        tally: &Shared,
        src_path: &str,
        location: &mut String,
        offset: u64,
        end: u64,
    ) -> Result<(), Failed> {
        let range = format!("bytes={offset}-{}", end - 1);
        let source = self.get_source(src_path, Some(range)).await?;
        if source.status() != StatusCode::PARTIAL_CONTENT {
            return Err(Failed::Fatal(Error::Manifest {
                reference: d.digest.clone(),
                reason: "source ignored the Range request needed for a chunked copy".into(),
            }));
        }
        let body = self.verifying(source, tally, end, d);
        let url = self.dst.url(location);
        let req = self
            .dst
            .http()
            .patch(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, end - offset)
            .header("Content-Range", format!("{offset}-{}", end - 1))
            .body(reqwest::Body::wrap_stream(body));
        let sent = self.dst.execute(req, &url, self.dst_repo, true).await;
        let resp = self
            .settle(d, tally, end, sent, "upload chunk", &url)
            .await?;
        *location = upload_location(&resp, &d.digest)?;
        Ok(())
    }

    /// Whether the upload session at `location` holds exactly `offset`
    /// bytes (its status, `Range: 0-<last>`); takes the session's new
    /// location.
    async fn resumable_at(&self, location: &mut String, offset: u64) -> bool {
        let Ok(resp) = self
            .dst
            .send(
                "upload status",
                Method::GET,
                location,
                self.dst_repo,
                true,
                &[],
            )
            .await
        else {
            return false;
        };
        let held = resp
            .headers()
            .get("Range")
            .and_then(|r| r.to_str().ok())
            .and_then(|r| r.strip_prefix("0-"))
            .and_then(|last| last.parse::<u64>().ok())
            .and_then(|last| last.checked_add(1));
        if resp.status() != StatusCode::NO_CONTENT || held != Some(offset) {
            return false;
        }
        if let Ok(next) = upload_location(&resp, "") {
            *location = next;
        }
        true
    }

    /// Classifies the outcome of a request whose body brought the blob up
    /// to byte `until`: the source's faults first (never retried), then
    /// the transfer's and the registry's.
    async fn settle(
        &self,
        d: &Descriptor,
        tally: &Shared,
        until: u64,
        sent: Result<Response, reqwest::Error>,
        operation: &'static str,
        url: &str,
    ) -> Result<Response, Failed> {
        let (seen, overflow, short, mismatch) = {
            let t = lock(tally);
            (t.seen, t.overflow, t.short, t.mismatch.clone())
        };
        if overflow || short {
            return Err(Failed::Fatal(Error::SizeMismatch {
                digest: d.digest.clone(),
                expected: until,
                actual: seen,
            }));
        }
        if let Some(actual) = mismatch {
            return Err(Failed::Fatal(Error::DigestMismatch {
                what: "blob",
                expected: d.digest.clone(),
                actual,
                size: seen,
            }));
        }
        let resp = sent.map_err(|source| {
            Failed::Retry(
                Error::Request {
                    operation,
                    url: url.to_owned(),
                    source,
                },
                None,
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            if seen != until {
                // Acknowledged before it had everything: never tag on it.
                return Err(Failed::Fatal(Error::Protocol {
                    url: url.to_owned(),
                    reason: format!("upload acknowledged after {seen} of {until} bytes"),
                }));
            }
            return Ok(resp);
        }
        let after = retry_after(resp.headers());
        let retry = status == StatusCode::UNAUTHORIZED
            || status.is_server_error()
            || (status == StatusCode::TOO_MANY_REQUESTS && self.dst.retries_rate_limited());
        let error = match self
            .dst
            .check_push(resp, self.dst_repo, operation, url)
            .await
        {
            Err(e) => e,
            Ok(resp) => return Ok(resp),
        };
        Err(if retry {
            Failed::Retry(error, after)
        } else {
            Failed::Fatal(error)
        })
    }

    /// GET a source blob (or a byte range of it).
    async fn get_source(&self, path: &str, range: Option<String>) -> Result<Response, Error> {
        let headers: Vec<(&'static str, String)> =
            range.map(|r| ("Range", r)).into_iter().collect();
        let resp = self
            .src
            .send(
                "get blob",
                Method::GET,
                path,
                self.src_repo,
                false,
                &headers,
            )
            .await?;
        check(resp, "get blob", &self.src.url(path)).await
    }

    /// The source body, hashed and counted into `tally` on the way: more
    /// than `limit` bytes in all, or an end before it, fails the stream
    /// (and so the request carrying it) and is marked in the tally. So
    /// does a whole blob with another digest, before its last bytes go out:
    /// the destination never receives all of it, whether or not it checks.
    fn verifying(
        &self,
        source: Response,
        tally: &Shared,
        limit: u64,
        d: &Descriptor,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let counted = tally.clone();
        let generation = lock(tally).generation;
        let progress = self.progress.clone();
        let (digest, size) = (d.digest.clone(), d.size);
        let body = source.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let mut t = lock(&counted);
            if t.generation != generation {
                return Err(std::io::Error::other("superseded by a retry"));
            }
            t.seen = t.seen.saturating_add(chunk.len() as u64);
            if t.seen > limit {
                t.overflow = true;
                return Err(std::io::Error::other("blob longer than its descriptor"));
            }
            t.hasher.update(&chunk);
            if t.seen == size {
                let actual = format!("sha256:{:x}", t.hasher.clone().finalize());
                if actual != digest {
                    t.mismatch = Some(actual);
                    return Err(std::io::Error::other("blob digest mismatch"));
                }
            }
            drop(t);
            if let Some(p) = &progress {
                p(&Progress::BlobBytes {
                    digest: digest.clone(),
                    bytes: chunk.len() as u64,
                });
            }
            Ok(chunk)
        });
        let ended = tally.clone();
        let end = stream::once(async move {
            let mut t = lock(&ended);
            (t.generation == generation && t.seen < limit).then(|| {
                t.short = true;
                Err(std::io::Error::other("blob shorter than its descriptor"))
            })
        })
        .filter_map(|item| async move { item });
        body.chain(end)
    }

    /// Best effort: ends an upload session (distribution would keep its
    /// partial data for days).
    async fn cancel_upload(&self, location: &str) {
        let _ = self
            .dst
            .send(
                "cancel upload",
                Method::DELETE,
                location,
                self.dst_repo,
                true,
                &[],
            )
            .await;
    }

    /// Cross-repository mount within one registry.
    async fn try_mount(&self, digest: &str) -> Result<bool, Error> {
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from={}",
            self.dst_repo, self.src_repo
        );
        let resp = self
            .dst
            .send("mount blob", Method::POST, &path, self.dst_repo, true, &[])
            .await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(true);
        }
        // Not mounted: the registry opened an upload session instead.
        if resp.status() == StatusCode::ACCEPTED
            && let Some(location) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok())
        {
            self.cancel_upload(location).await;
        }
        Ok(false)
    }
}

/// The upload URL a registry answered with.
fn upload_location(resp: &Response, digest: &str) -> Result<String, Error> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Manifest {
            reference: digest.to_owned(),
            reason: "upload without Location".into(),
        })
}

fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}
