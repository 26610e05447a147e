//! Referrers (signatures, SBOMs, attestations pointing at a manifest with
//! `subject`): found through the OCI 1.1 referrers API, or the tag-schema
//! fallback (`sha256-<hex>` naming an index of them) that registries
//! without the API use; copied after their subject, and made findable at
//! the destination the same way.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::Error;
use crate::client::Manifest;
use crate::copy::{Copier, parse};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Referrers of referrers (a signature of an SBOM) are followed this deep.
const MAX_DEPTH: usize = 3;

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
                let Some(digest) = descriptor["digest"].as_str() else {
                    continue;
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

    /// The referrer descriptors of `subject` at the source, or `None`.
    async fn source_referrers(&self, subject: &str) -> Result<Option<Vec<Value>>, Error> {
        let path = format!("/v2/{}/referrers/{subject}", self.src_repo);
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
        let index: Value = if resp.status() == StatusCode::OK {
            let bytes = resp.bytes().await.map_err(|source| Error::Request {
                operation: "list referrers",
                url: self.src.url(&path),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                reference: format!("referrers of {subject}"),
                reason: e.to_string(),
            })?
        } else {
            // No referrers API: the tag schema.
            match self
                .src
                .get_manifest(self.src_repo, &fallback_tag(subject))
                .await
            {
                Ok(m) => serde_json::from_slice(&m.bytes).map_err(|e| Error::Manifest {
                    reference: fallback_tag(subject),
                    reason: e.to_string(),
                })?,
                Err(Error::Status { status: 404, .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        Ok(index["manifests"]
            .as_array()
            .cloned()
            .filter(|l| !l.is_empty()))
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
