//! Who may do what: the router asks an [`Access`] before every request,
//! naming everything the request needs.

use std::net::IpAddr;

use axum::http::HeaderMap;
use kiln_registry_token::{Action, RepositoryName};

use crate::Error;

/// One thing a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Need {
    /// `GET /v2/`: any authenticated client (or anonymous where allowed).
    Base,
    /// `GET /v2/_catalog`.
    Catalog,
    /// An action on a repository.
    Repository(RepositoryName, Action),
    /// An action the request can use but does without (a mount's source):
    /// named in challenges, so that a token covers it, never required.
    Wanted(RepositoryName, Action),
}

/// What the credentials of an authorized request allow beyond what it
/// needed (to filter the catalog, or to pick a mount source).
pub trait Grant: Send + Sync {
    /// Whether `action` on `repo` is allowed.
    fn allows(&self, repo: &RepositoryName, action: Action) -> bool;
}

/// A refusal: the error (401, 403 or 429) and, for a 401, the
/// `WWW-Authenticate` challenge to send.
#[derive(Debug)]
pub struct Denial {
    /// [`Error::Unauthorized`], [`Error::Denied`] or
    /// [`Error::TooManyRequests`].
    pub error: Error,
    /// The `WWW-Authenticate` header value.
    pub challenge: Option<String>,
}

/// The request facts an [`Access`] decides on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The headers (`Authorization`).
    pub headers: &'a HeaderMap,
    /// The client's address, when the server knows it.
    pub peer: Option<IpAddr>,
}

/// Authentication and authorization for the distribution API.
pub trait Access: Send + Sync + 'static {
    /// What an authorized request may do.
    type Grant: Grant;

    /// Allows the request if its credentials cover every one of `needs`.
    ///
    /// # Errors
    ///
    /// A [`Denial`].
    fn authorize(&self, request: Request<'_>, needs: &[Need]) -> Result<Self::Grant, Denial>;
}

/// No authentication: everything is allowed (a registry on a trusted
/// loopback, or tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Open;

/// Open's grant: everything.
#[derive(Debug, Clone, Copy)]
pub struct Everything;

impl Grant for Everything {
    fn allows(&self, _: &RepositoryName, _: Action) -> bool {
        true
    }
}

impl Access for Open {
    type Grant = Everything;
    fn authorize(&self, _: Request<'_>, _: &[Need]) -> Result<Everything, Denial> {
        Ok(Everything)
    }
}
