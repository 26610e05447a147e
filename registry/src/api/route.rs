//! Which distribution endpoint a `/v2/...` path names. Repository names
//! have any number of `/`-separated components, so a path is read from its
//! end: the last fixed segment decides.

use kiln_registry_token::RepositoryName;

use crate::{Digest, Error, Reference, UploadId};

/// A parsed `/v2/` path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags(RepositoryName),
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(RepositoryName, Reference),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(RepositoryName, Digest),
    /// `/v2/<name>/blobs/uploads/`.
    UploadStart(RepositoryName),
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload(RepositoryName, UploadId),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(RepositoryName, Digest),
}

fn name(s: &str) -> Result<RepositoryName, Error> {
    s.parse()
        .map_err(|_| Error::InvalidName(s.chars().take(300).collect()))
}

impl Route {
    /// Reads the path after `/v2/` (no query).
    ///
    /// # Errors
    ///
    /// [`Error::NameInvalid`](crate::ErrorCode::NameInvalid) for a bad
    /// repository name, [`Error::InvalidDigest`], [`Error::InvalidTag`],
    /// [`Error::UploadUnknown`] for a malformed upload id, and
    /// [`Error::ManifestUnknown`] for a path that is no endpoint at all.
    pub fn parse(path: &str) -> Result<Self, Error> {
        if path.is_empty() {
            return Ok(Self::Base);
        }
        if path == "_catalog" {
            return Ok(Self::Catalog);
        }
        if let Some(n) = path.strip_suffix("/tags/list") {
            return Ok(Self::Tags(name(n)?));
        }
        if let Some(n) = path
            .strip_suffix("/blobs/uploads/")
            .or_else(|| path.strip_suffix("/blobs/uploads"))
        {
            return Ok(Self::UploadStart(name(n)?));
        }
        let not_found = || Error::NotFound(path.chars().take(300).collect());
        let (prefix, last) = path.rsplit_once('/').ok_or_else(not_found)?;
        if let Some(n) = prefix.strip_suffix("/blobs/uploads") {
            let repo = name(n)?;
            return Ok(Self::Upload(repo, last.parse()?));
        }
        if let Some(n) = prefix.strip_suffix("/manifests") {
            let repo = name(n)?;
            return Ok(Self::Manifest(repo, last.parse()?));
        }
        if let Some(n) = prefix.strip_suffix("/blobs") {
            let repo = name(n)?;
            return Ok(Self::Blob(repo, last.parse()?));
        }
        if let Some(n) = prefix.strip_suffix("/referrers") {
            let repo = name(n)?;
            return Ok(Self::Referrers(repo, last.parse()?));
        }
        Err(not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn paths() {
        let r = |s: &str| Route::parse(s);
        assert_eq!(r("").unwrap(), Route::Base);
        assert_eq!(r("_catalog").unwrap(), Route::Catalog);
        assert!(
            matches!(r("cache/global/node/tags/list").unwrap(), Route::Tags(n) if n.as_str() == "cache/global/node")
        );
        assert!(
            matches!(r("a/b/c/d/manifests/latest").unwrap(), Route::Manifest(n, Reference::Tag(_)) if n.as_str() == "a/b/c/d")
        );
        assert!(matches!(
            r(&format!("a/manifests/{D}")).unwrap(),
            Route::Manifest(_, Reference::Digest(_))
        ));
        assert!(
            matches!(r(&format!("a/blobs/blobs/{D}")).unwrap(), Route::Blob(n, _) if n.as_str() == "a/blobs")
        );
        assert!(matches!(
            r("a/blobs/uploads/").unwrap(),
            Route::UploadStart(_)
        ));
        assert!(matches!(
            r("a/blobs/uploads").unwrap(),
            Route::UploadStart(_)
        ));
        assert!(matches!(
            r("a/blobs/uploads/0123456789abcdef0123456789abcdef").unwrap(),
            Route::Upload(..)
        ));
        assert!(matches!(
            r(&format!("x/y/referrers/{D}")).unwrap(),
            Route::Referrers(..)
        ));
    }

    #[test]
    fn hostile_paths_are_typed_errors() {
        let r = |s: &str| Route::parse(s).unwrap_err();
        assert!(matches!(
            r("a/manifests/sha256:totallywrong"),
            Error::InvalidDigest(_)
        ));
        assert!(matches!(
            r("../etc/manifests/latest"),
            Error::InvalidName(_)
        ));
        assert!(matches!(r("A/manifests/latest"), Error::InvalidName(_)));
        assert!(matches!(r("a/manifests/..%2f"), Error::InvalidTag(_)));
        assert!(matches!(r("a/blobs/uploads/../../x"), Error::NotFound(_)));
        assert!(matches!(
            r("a/blobs/uploads/..%2F..%2Fx"),
            Error::UploadUnknown(_)
        ));
        assert!(matches!(r(&format!("a/blobs/{D}/x")), Error::NotFound(_)));
        assert!(matches!(r("nothing"), Error::NotFound(_)));
    }
}
