//! What the registry needs to know of a manifest it is given: its media
//! type, the blobs and child manifests it references, its subject, and the
//! descriptor it contributes to its subject's referrers. The bytes
//! themselves are stored untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Error};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a manifest lists blobs (an image) or other manifests (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Config and layers.
    Image,
    /// Child manifests.
    Index,
}

/// A descriptor as manifests carry it (unknown fields dropped: the stored
/// manifest keeps them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// The artifact type, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Where else the content may be fetched (non-distributable layers).
    #[serde(default, skip_serializing)]
    pub urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A manifest as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its media type (field, `Content-Type`, or inferred).
    pub media_type: String,
    /// Image or index.
    pub kind: Kind,
    /// Blobs that must be in the repository: the config and every layer
    /// without `urls`.
    pub blobs: Vec<Digest>,
    /// Manifests that must be in the repository (an index's children).
    pub children: Vec<Digest>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    pub subject: Option<Digest>,
    /// `artifactType`, or an image's config media type.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Reads a manifest's bytes; `content_type` is the request's
    /// `Content-Type`, if any.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidManifest`] for anything that is not a schema-2
    /// manifest or index of a known media type, or whose declared media
    /// type disagrees with its content.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, Error> {
        let bad = |m: String| Error::InvalidManifest(m);
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(bad(format!(
                "schemaVersion {:?} is not supported (only 2)",
                raw.schema_version
            )));
        }
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| {
                !c.is_empty() && *c != "application/json" && *c != "application/octet-stream"
            });
        let media_type = match (raw.media_type.as_deref(), header) {
            (Some(field), Some(h)) if field != h => {
                return Err(bad(format!("mediaType {field} but Content-Type {h}")));
            }
            (Some(field), _) => field.to_owned(),
            (None, Some(h)) => h.to_owned(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        let kind = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
            OCI_INDEX | DOCKER_LIST => Kind::Index,
            other => return Err(bad(format!("unsupported manifest media type {other:?}"))),
        };
        let mut m = Self {
            media_type,
            kind,
            blobs: Vec::new(),
            children: Vec::new(),
            subject: raw.subject.map(|s| s.digest),
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        };
        match kind {
            Kind::Image => {
                if raw.manifests.is_some() {
                    return Err(bad("an image manifest with `manifests`".into()));
                }
                let config = raw.config.ok_or_else(|| bad("no config".into()))?;
                let layers = raw.layers.ok_or_else(|| bad("no layers".into()))?;
                if m.artifact_type.is_none() {
                    m.artifact_type = Some(config.media_type.clone());
                }
                m.blobs.push(config.digest);
                m.blobs.extend(
                    layers
                        .into_iter()
                        .filter(|l| l.urls.as_ref().is_none_or(Vec::is_empty))
                        .map(|l| l.digest),
                );
            }
            Kind::Index => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(bad("an index with config or layers".into()));
                }
                let children = raw.manifests.ok_or_else(|| bad("no manifests".into()))?;
                m.children = children.into_iter().map(|c| c.digest).collect();
            }
        }
        Ok(m)
    }

    /// The descriptor of this manifest in its subject's referrers list.
    pub fn referrer_descriptor(&self, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: digest.clone(),
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
            urls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    const D2: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000002";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,{extra}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2,"newUnspecifiedField":null}},"layers":[{{"mediaType":"x","digest":"{D2}","size":3}},{{"mediaType":"x","digest":"{D2}","size":3,"urls":["http://x"]}}]}}"#
        )
    }

    #[test]
    fn images_indexes_and_their_references() {
        let m = Manifest::parse(image("").as_bytes(), None).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.blobs.len(), 2, "a layer with urls is not required");
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );

        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1}},"artifactType":"a/b"}}"#
        );
        let m = Manifest::parse(idx.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.children[0].as_str(), D1);
        assert_eq!(m.subject.as_ref().unwrap().as_str(), D2);
    }

    #[test]
    fn refuses_what_it_cannot_vouch_for() {
        let docker = image(&format!(r#""mediaType":"{DOCKER_MANIFEST}","#));
        for (bytes, ct) in [
            ("{}".to_owned(), None),
            ("not json".to_owned(), None),
            (r#"{"schemaVersion":1,"fsLayers":[]}"#.to_owned(), None),
            (docker.clone(), Some(OCI_MANIFEST)),
            (
                image(""),
                Some("application/vnd.oci.artifact.manifest.v1+json"),
            ),
            (image("").replace(D1, "sha256:abc"), None),
            (image("").replace("\"size\":2", "\"size\":-2"), None),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","manifests":[]}}"#),
                None,
            ),
        ] {
            assert!(
                Manifest::parse(bytes.as_bytes(), ct).is_err(),
                "{bytes} {ct:?}"
            );
        }
        assert_eq!(
            Manifest::parse(docker.as_bytes(), Some(DOCKER_MANIFEST))
                .unwrap()
                .kind,
            Kind::Image
        );
        assert!(
            Manifest::parse(
                image("").as_bytes(),
                Some("application/json; charset=utf-8")
            )
            .is_ok()
        );
    }
}
