//! Choosing an image (tag, digest, platform) and reading what it needs:
//! layers, `diff_ids`, and the run configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::Limits;
use crate::error::{Error, Result};
use crate::source::{BlobSource, OciLayout, read_document};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Nested indexes followed before giving up.
const MAX_INDEX_DEPTH: usize = 4;

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// The operating system (`linux`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The architecture (`amd64`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The variant (`v8`), if given.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant().as_deref() == Some(v.as_str()))
    }
}

impl Default for Platform {
    /// `linux/amd64`.
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "invalid platform {s:?} (expected os/arch[/variant])"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Which image of a layout to convert.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// A tag (`org.opencontainers.image.ref.name`) or manifest digest; `None`
    /// means the layout's only image.
    pub reference: Option<Reference>,
    /// The platform to pick from an index (default `linux/amd64`).
    pub platform: Platform,
}

/// A tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag.
    Tag(String),
    /// A manifest or index digest.
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => write!(f, ":{t}"),
            Self::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// What a VM's init needs to run the image: the image config's runtime
/// part, written as JSON beside the ext4 image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunConfig {
    /// The manifest digest of the converted image.
    pub image: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir` (empty = `/`).
    pub working_dir: String,
    /// `User` (`name`, `uid`, `uid:gid`, ...; empty = root).
    pub user: String,
    /// `ExposedPorts` (`8080/tcp`).
    pub exposed_ports: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`, if set.
    pub stop_signal: Option<String>,
}

/// A resolved, runnable image: its layers in order and their `diff_ids`.
#[derive(Debug, Clone)]
pub struct Image {
    manifest_digest: Digest,
    layers: Vec<Descriptor>,
    diff_ids: Vec<String>,
    run_config: RunConfig,
}

impl Image {
    /// Resolves `selector` in an OCI layout.
    ///
    /// # Errors
    ///
    /// [`Error::ImageNotFound`], [`Error::PlatformNotFound`],
    /// [`Error::NotRunnableImage`], or a blob/JSON problem.
    pub fn resolve(layout: &OciLayout, selector: &Selector) -> Result<Self> {
        Self::resolve_with(layout, selector, &Limits::default())
    }

    /// [`Image::resolve`] with explicit limits.
    ///
    /// # Errors
    ///
    /// As [`Image::resolve`].
    pub fn resolve_with(layout: &OciLayout, selector: &Selector, limits: &Limits) -> Result<Self> {
        let index = layout.index_within(limits.max_document_bytes)?;
        let manifests = index.manifests();
        let chosen = match &selector.reference {
            Some(Reference::Digest(d)) => manifests.iter().find(|m| m.digest() == d),
            Some(Reference::Tag(t)) => manifests.iter().find(|m| {
                m.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|name| name == t)
            }),
            None if manifests.len() == 1 => manifests.first(),
            None => None,
        };
        let not_found = || Error::ImageNotFound {
            selector: selector
                .reference
                .as_ref()
                .map_or_else(|| "(the only image)".to_string(), ToString::to_string),
        };
        let descriptor = chosen.ok_or_else(not_found)?;
        Self::load(layout, descriptor, &selector.platform, limits)
    }

    /// Loads the image a manifest or index descriptor names, picking
    /// `platform` from indexes. Works with any [`BlobSource`].
    ///
    /// # Errors
    ///
    /// As [`Image::resolve`].
    pub fn load(
        source: &dyn BlobSource,
        descriptor: &Descriptor,
        platform: &Platform,
        limits: &Limits,
    ) -> Result<Self> {
        let mut descriptor = descriptor.clone();
        for _ in 0..=MAX_INDEX_DEPTH {
            let bytes = read_document(source, &descriptor, limits.max_document_bytes)?;
            match document_kind(&descriptor, &bytes)? {
                DocumentKind::Index => {
                    let index: ImageIndex = from_json("image index", &bytes)?;
                    descriptor = pick_platform(&index, platform)?;
                }
                DocumentKind::Manifest => {
                    let manifest: ImageManifest = from_json("image manifest", &bytes)?;
                    return Self::from_manifest(source, &descriptor, &manifest, limits);
                }
            }
        }
        Err(Error::UnsupportedMediaType {
            media_type: "image index nested too deeply".into(),
        })
    }

    fn from_manifest(
        source: &dyn BlobSource,
        descriptor: &Descriptor,
        manifest: &ImageManifest,
        limits: &Limits,
    ) -> Result<Self> {
        let config_type = manifest.config().media_type().to_string();
        if !matches!(config_type.as_str(), OCI_CONFIG | DOCKER_CONFIG)
            || manifest.artifact_type().is_some()
        {
            return Err(Error::NotRunnableImage {
                config_media_type: config_type,
            });
        }
        let bytes = read_document(source, manifest.config(), limits.max_document_bytes)?;
        let config: ImageConfiguration = from_json("image config", &bytes)?;
        let diff_ids: Vec<String> = config.rootfs().diff_ids().clone();
        if manifest.layers().len() > limits.max_layers as usize {
            return Err(Error::LimitExceeded {
                limit: crate::error::Limit::Layers,
                max: limits.max_layers.into(),
            });
        }
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::LayerCountMismatch {
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        for layer in manifest.layers() {
            crate::layer::Compression::of(layer.media_type().as_ref())?;
        }
        let run = config.config().clone().unwrap_or_default();
        let mut image_platform = format!("{}/{}", config.os(), config.architecture());
        if let Some(v) = config.variant() {
            image_platform = format!("{image_platform}/{v}");
        }
        let run_config = RunConfig {
            image: descriptor.digest().to_string(),
            platform: image_platform,
            entrypoint: run.entrypoint().clone().unwrap_or_default(),
            cmd: run.cmd().clone().unwrap_or_default(),
            env: run.env().clone().unwrap_or_default(),
            working_dir: run.working_dir().clone().unwrap_or_default(),
            user: run.user().clone().unwrap_or_default(),
            exposed_ports: run.exposed_ports().clone().unwrap_or_default(),
            labels: run
                .labels()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            stop_signal: run.stop_signal().clone(),
        };
        Ok(Self {
            manifest_digest: descriptor.digest().clone(),
            layers: manifest.layers().clone(),
            diff_ids,
            run_config,
        })
    }

    /// The manifest's digest.
    pub fn manifest_digest(&self) -> &Digest {
        &self.manifest_digest
    }

    /// The layer descriptors, bottom first.
    pub fn layers(&self) -> &[Descriptor] {
        &self.layers
    }

    /// The config's `rootfs.diff_ids`, one per layer.
    pub fn diff_ids(&self) -> &[String] {
        &self.diff_ids
    }

    /// The run configuration.
    pub fn run_config(&self) -> &RunConfig {
        &self.run_config
    }

    /// The run configuration as pretty JSON.
    pub fn run_config_json(&self) -> String {
        // Serializing strings, vectors and maps cannot fail.
        serde_json::to_string_pretty(&self.run_config).unwrap_or_default()
    }
}

enum DocumentKind {
    Index,
    Manifest,
}

/// From the descriptor's media type, else the document's own `mediaType`,
/// else its shape (`manifests` vs `layers`).
fn document_kind(descriptor: &Descriptor, bytes: &[u8]) -> Result<DocumentKind> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sniff {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let kind = |media_type: &str| match media_type {
        OCI_INDEX | DOCKER_LIST => Some(DocumentKind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Some(DocumentKind::Manifest),
        _ => None,
    };
    let declared = descriptor.media_type().to_string();
    if let Some(k) = kind(&declared) {
        return Ok(k);
    }
    let sniff: Sniff = from_json("manifest", bytes)?;
    match sniff.media_type.as_deref() {
        Some(m) => kind(m).ok_or_else(|| Error::UnsupportedMediaType {
            media_type: m.to_string(),
        }),
        None if sniff.manifests.is_some() => Ok(DocumentKind::Index),
        None => Ok(DocumentKind::Manifest),
    }
}

fn pick_platform(index: &ImageIndex, platform: &Platform) -> Result<Descriptor> {
    let is_attestation = |m: &Descriptor| {
        m.annotations()
            .as_ref()
            .is_some_and(|a| a.contains_key("vnd.docker.reference.type"))
    };
    index
        .manifests()
        .iter()
        .filter(|m| !is_attestation(m))
        .find(|m| m.platform().as_ref().is_some_and(|p| platform.matches(p)))
        .cloned()
        .ok_or_else(|| Error::PlatformNotFound {
            platform: platform.to_string(),
            available: index
                .manifests()
                .iter()
                .filter_map(|m| m.platform().as_ref())
                .map(|p| {
                    let mut s = format!("{}/{}", p.os(), p.architecture());
                    if let Some(v) = p.variant() {
                        s = format!("{s}/{v}");
                    }
                    s
                })
                .collect(),
        })
}

fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(Platform::default().to_string(), "linux/amd64");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }
}
