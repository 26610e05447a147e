//! Referrers (signatures, SBOMs, attestations pointing at a manifest with
//! `subject`): found through the OCI 1.1 referrers API, or the tag-schema
//! fallback (`sha256-<hex>` naming an index of them) that registries
//! without the API use; copied after their subject, and made findable at
//! the destination the same way.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::Error;
use crate::client::{MAX_MANIFEST, Manifest, check, read_limited};
use crate::copy::{Copier, parse};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Referrers of referrers (a signature of an SBOM) are followed this deep.
const MAX_DEPTH: usize = 3;

/// The referrers API is followed for at most this many pages.
const MAX_PAGES: usize = 100;

/// The `manifests` of an index (none when absent).
fn manifests(bytes: &[u8], reference: impl FnOnce() -> String) -> Result<Vec<Value>, Error> {
    let index: Value = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
        reference: reference(),
        reason: e.to_string(),
    })?;
    Ok(index["manifests"].as_array().cloned().unwrap_or_default())
}

/// The fallback tag for `digest` (`sha256:abc` → `sha256-abc`).
pub(crate) fn fallback_tag(digest: &str) -> String {
    let tag = digest.replacen(':', "-", 1);
    tag.chars().take(128).collect()
}

impl Copier<'_> {
    /// Copies every referrer of `subject` (and theirs, a few levels deep);
    /// returns how many manifests were copied.
    pub(crate) async fn copy_referrers(&self, subject: &str) -> Result<usize, Error> {
        let mut copied = 0;
        let mut pending = vec![(subject.to_owned(), 0)];
        while let Some((subject, depth)) = pending.pop() {
            let Some(list) = self.source_referrers(&subject).await? else {
                continue;
            };
            let mut written = Vec::new();
            for descriptor in list {
                let Some(digest) = descriptor["digest"]
                    .as_str()
                    .filter(|d| crate::location::is_digest(d))
                else {
                    return Err(Error::Manifest {
                        reference: format!("referrers of {subject}"),
                        reason: format!(
                            "a referrer without a sha256 digest: {:.200}",
                            descriptor.to_string()
                        ),
                    });
                };
                let m = self.src.get_manifest(self.src_repo, digest).await?;
                let doc = parse(&m)?;
                self.copy_image(&m, &doc).await?;
                self.put(&m, None).await?;
                copied += 1;
                if depth + 1 < MAX_DEPTH {
                    pending.push((m.digest.clone(), depth + 1));
                }
                written.push(descriptor);
            }
            self.publish_referrers(&subject, written).await?;
        }
        Ok(copied)
    }

    /// The referrer descriptors of `subject` at the source (every page of
    /// the referrers API, else the fallback tag's index), or `None`.
    async fn source_referrers(&self, subject: &str) -> Result<Option<Vec<Value>>, Error> {
        let mut path = format!("/v2/{}/referrers/{subject}", self.src_repo);
        let mut found = Vec::new();
        for page in 0.. {
            if page == MAX_PAGES {
                return Err(Error::Manifest {
                    reference: format!("referrers of {subject}"),
                    reason: format!("more than {MAX_PAGES} pages"),
                });
            }
            let resp = self
                .src
                .send(
                    "list referrers",
                    Method::GET,
                    &path,
                    self.src_repo,
                    false,
                    &[("Accept", OCI_INDEX.to_owned())],
                )
                .await?;
            if page == 0 && resp.status() != StatusCode::OK {
                // No referrers API: the tag schema.
                return self.fallback_referrers(subject).await;
            }
            let resp = check(resp, "list referrers", &self.src.url(&path)).await?;
            let next = self.src.next_page(resp.headers())?;
            let bytes = read_limited(resp, MAX_MANIFEST, &self.src.url(&path)).await?;
            found.extend(manifests(&bytes, || format!("referrers of {subject}"))?);
            match next {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(Some(found).filter(|l| !l.is_empty()))
    }

    /// The referrers the fallback tag of `subject` lists at the source.
    async fn fallback_referrers(&self, subject: &str) -> Result<Option<Vec<Value>>, Error> {
        let tag = fallback_tag(subject);
        match self.src.get_manifest(self.src_repo, &tag).await {
            Ok(m) => Ok(Some(manifests(&m.bytes, || tag.clone())?).filter(|l| !l.is_empty())),
            Err(Error::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the copied referrers findable at the destination: a registry
    /// with the referrers API indexes them itself (they carry `subject`);
    /// otherwise the tag-schema index is created or extended.
    async fn publish_referrers(&self, subject: &str, referrers: Vec<Value>) -> Result<(), Error> {
        if referrers.is_empty() {
            return Ok(());
        }
        let path = format!("/v2/{}/referrers/{subject}", self.dst_repo);
        let api = self
            .dst
            .send(
                "list referrers",
                Method::GET,
                &path,
                self.dst_repo,
                false,
                &[("Accept", OCI_INDEX.to_owned())],
            )
            .await?;
        if api.status() == StatusCode::OK {
            return Ok(());
        }
        let tag = fallback_tag(subject);
        let mut manifests = match self.dst.get_manifest(self.dst_repo, &tag).await {
            Ok(m) => serde_json::from_slice::<Value>(&m.bytes)
                .ok()
                .and_then(|v| v["manifests"].as_array().cloned())
                .unwrap_or_default(),
            Err(Error::Status { status: 404, .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let before = manifests.len();
        for r in referrers {
            if !manifests.iter().any(|m| m["digest"] == r["digest"]) {
                manifests.push(r);
            }
        }
        if manifests.len() == before {
            return Ok(());
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| Error::Manifest {
            reference: tag.clone(),
            reason: e.to_string(),
        })?;
        let manifest = Manifest {
            digest: crate::client::sha256_digest(&bytes),
            bytes,
            media_type: OCI_INDEX.to_owned(),
        };
        self.dst.put_manifest(self.dst_repo, &tag, &manifest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_replace_the_colon() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(fallback_tag(&d), format!("sha256-{}", "a".repeat(64)));
        assert!(fallback_tag(&format!("sha512:{}", "b".repeat(128))).len() <= 128);
    }
}
