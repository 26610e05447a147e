//! Referrers (signatures, SBOMs, attestations pointing at a manifest with
//! `subject`): found through the OCI 1.1 referrers API, or the tag-schema
//! fallback (`sha256-<hex>` naming an index of them) that registries
//! without the API use; copied after their subject, and made findable at
//! the destination the same way.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::client::{MAX_MANIFEST, Manifest, OCI_INDEX, check, read_limited};
use crate::copy::{Copier, Platforms, parse};

/// Referrers of referrers (a signature of an SBOM) are followed this deep.
const MAX_DEPTH: usize = 3;

/// The referrers API is followed for at most this many pages...
const MAX_PAGES: usize = 100;

/// ...and a copy takes at most this many referrers in all.
const MAX_REFERRERS: usize = 1000;

/// A list of referrers (an API page or a fallback index): only the digests
/// are taken from it (checked like every descriptor digest); what is
/// published at the destination is described from the manifests fetched.
#[derive(Deserialize)]
struct Listed {
    #[serde(default)]
    manifests: Vec<ListedReferrer>,
}

#[derive(Deserialize)]
struct ListedReferrer {
    #[serde(deserialize_with = "crate::copy::digest")]
    digest: String,
}

fn listed(bytes: &[u8], reference: impl FnOnce() -> String) -> Result<Vec<String>, Error> {
    let list: Listed = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
        reference: reference(),
        reason: e.to_string(),
    })?;
    Ok(list.manifests.into_iter().map(|r| r.digest).collect())
}

/// Whether `bytes` is a referrers list a copy would follow (for the fuzz
/// target).
pub(crate) fn accepts(bytes: &[u8]) -> bool {
    listed(bytes, String::new).is_ok()
}

/// The referrers-list descriptor of a manifest, as a registry with the
/// API would give it: media type, digest, size, `artifactType` (else the
/// config's media type) and annotations.
fn descriptor(m: &Manifest) -> Value {
    let doc: Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
    let mut d = json!({
        "mediaType": m.media_type,
        "digest": m.digest,
        "size": m.bytes.len(),
    });
    let artifact_type = doc
        .get("artifactType")
        .or_else(|| doc.get("config").and_then(|c| c.get("mediaType")));
    if let Some(t) = artifact_type.filter(|t| t.is_string()) {
        d["artifactType"] = t.clone();
    }
    if let Some(a) = doc.get("annotations").filter(|a| a.is_object()) {
        d["annotations"] = a.clone();
    }
    d
}

/// The fallback tag for `digest` (`sha256:abc` → `sha256-abc`).
pub(crate) fn fallback_tag(digest: &str) -> String {
    let tag = digest.replacen(':', "-", 1);
    tag.chars().take(128).collect()
}

impl Copier<'_> {
    /// Copies every referrer of `subjects` (and theirs, a few levels deep,
    /// each once); returns how many manifests were copied.
    pub(crate) async fn copy_referrers(&self, subjects: Vec<String>) -> Result<usize, Error> {
        let mut seen: HashSet<String> = subjects.iter().cloned().collect();
        let mut copied = 0;
        let mut pending: Vec<(String, usize)> = subjects.into_iter().map(|s| (s, 0)).collect();
        while let Some((subject, depth)) = pending.pop() {
            let mut written = Vec::new();
            for digest in self.source_referrers(&subject).await? {
                if !seen.insert(digest.clone()) {
                    continue;
                }
                if copied == MAX_REFERRERS {
                    return Err(Error::Manifest {
                        reference: format!("referrers of {subject}"),
                        reason: format!("more than {MAX_REFERRERS} referrers"),
                    });
                }
                let m = self.src.get_manifest(self.src_repo, &digest).await?;
                let doc = parse(&m)?;
                // A referrer may itself be an index (of attestations).
                self.copy_content(&m, &doc, &Platforms::All).await?;
                self.put(&m, None).await?;
                copied += 1;
                if depth + 1 < MAX_DEPTH {
                    pending.push((m.digest.clone(), depth + 1));
                }
                written.push(descriptor(&m));
            }
            self.publish_referrers(&subject, written).await?;
        }
        Ok(copied)
    }

    /// The referrer digests of `subject` at the source (every page of the
    /// referrers API, else the fallback tag's index).
    async fn source_referrers(&self, subject: &str) -> Result<Vec<String>, Error> {
        let mut url = self
            .src
            .url(&format!("/v2/{}/referrers/{subject}", self.src_repo));
        let mut found = Vec::new();
        for page in 0.. {
            if page == MAX_PAGES || found.len() > MAX_REFERRERS {
                return Err(Error::Manifest {
                    reference: format!("referrers of {subject}"),
                    reason: format!("more than {MAX_PAGES} pages or {MAX_REFERRERS} referrers"),
                });
            }
            let resp = self
                .src
                .send(
                    "list referrers",
                    Method::GET,
                    &url,
                    self.src_repo,
                    false,
                    &[("Accept", OCI_INDEX.to_owned())],
                )
                .await?;
            if page == 0 && resp.status() != StatusCode::OK {
                // No referrers API: the tag schema.
                return self.fallback_referrers(subject).await;
            }
            let resp = check(resp, "list referrers", &url).await?;
            let next = self.src.next_page(resp.headers())?;
            let bytes = read_limited(resp, MAX_MANIFEST, &url).await?;
            found.extend(listed(&bytes, || format!("referrers of {subject}"))?);
            match next {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(found)
    }

    /// The referrers the fallback tag of `subject` lists at the source.
    async fn fallback_referrers(&self, subject: &str) -> Result<Vec<String>, Error> {
        let tag = fallback_tag(subject);
        match self.src.get_manifest(self.src_repo, &tag).await {
            Ok(m) => listed(&m.bytes, || tag.clone()),
            Err(Error::Status { status: 404, .. }) => Ok(Vec::new()),
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
    fn listed_referrers_are_digests_checked_like_any_descriptor() {
        let d = format!("sha256:{}", "a".repeat(64));
        let page = format!(r#"{{"manifests":[{{"digest":"{d}","size":9,"junk":[1,2]}}]}}"#);
        assert_eq!(
            listed(page.as_bytes(), String::new).unwrap(),
            std::slice::from_ref(&d)
        );
        assert!(listed(b"{}", String::new).unwrap().is_empty());
        for bad in [
            r#"{"manifests":[{}]}"#.to_owned(),
            r#"{"manifests":[{"digest":"latest"}]}"#.to_owned(),
            format!(r#"{{"manifests":[{{"digest":"{d}/../x"}}]}}"#),
            r#"{"manifests":{}}"#.to_owned(),
        ] {
            assert!(listed(bad.as_bytes(), String::new).is_err(), "{bad}");
        }
    }

    #[test]
    fn published_descriptors_come_from_the_manifest_itself() {
        let bytes = br#"{"schemaVersion":2,"artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"annotations":{"a":"b"}}"#;
        let m = Manifest {
            bytes: bytes.to_vec(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: crate::client::sha256_digest(bytes),
        };
        let d = descriptor(&m);
        assert_eq!(d["digest"], m.digest);
        assert_eq!(d["size"], bytes.len());
        assert_eq!(d["mediaType"], m.media_type);
        assert_eq!(d["artifactType"], "application/spdx+json");
        assert_eq!(d["annotations"]["a"], "b");
        // No artifactType: the config's media type.
        let bytes =
            br#"{"config":{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json"}}"#;
        let m = Manifest {
            bytes: bytes.to_vec(),
            media_type: m.media_type,
            digest: crate::client::sha256_digest(bytes),
        };
        let d = descriptor(&m);
        assert_eq!(
            d["artifactType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        assert!(d.get("annotations").is_none());
    }

    #[test]
    fn fallback_tags_replace_the_colon() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(fallback_tag(&d), format!("sha256-{}", "a".repeat(64)));
        assert!(fallback_tag(&format!("sha512:{}", "b".repeat(128))).len() <= 128);
    }
}
