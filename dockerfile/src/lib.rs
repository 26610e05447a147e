//! Parse Dockerfiles exactly as BuildKit does.
//!
//! - [`Dockerfile::parse`]: BuildKit's parser (directives, escape token, line
//!   continuations, heredocs, JSON vs shell form, flags), keeping each
//!   instruction's source span.
//! - [`Dockerfile::resolve`] / [`Dockerfile::stages`]: the stage model and
//!   FROM resolution (global ARGs, build args, automatic platform args, every
//!   expansion form, stage / `scratch` / image lookup).
//! - [`Dockerfile::images`]: the external images a build pulls, normalised as
//!   `distribution/reference` does ([`ImageRef`]).
//! - [`Dockerfile::rewrite`]: lossless rewriting of those references to a
//!   [`Mirror`].
//!
//! ```
//! # fn main() -> Result<(), kiln_dockerfile::Error> {
//! use kiln_dockerfile::{Dockerfile, ResolveOptions};
//!
//! let df = Dockerfile::parse("ARG TAG=3.20\nFROM alpine:$TAG AS base\nFROM base\n")?;
//! let images = df.images(&ResolveOptions::new())?;
//! assert_eq!(images.len(), 1);
//! assert_eq!(images[0].reference.to_string(), "docker.io/library/alpine:3.20");
//!
//! let mirror = "127.0.0.1:5000".parse()?;
//! let out = df.rewrite(&ResolveOptions::new(), &mirror, |_| true)?;
//! assert_eq!(out.text, "ARG TAG=3.20\nFROM 127.0.0.1:5000/docker.io/library/alpine:3.20 AS base\nFROM base\n");
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every fallible call returns [`Error`]: a BuildKit-worded [`ErrorKind`] and
//! the line BuildKit reports. No input makes this crate panic.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod directives;
mod error;
mod flags;
mod gostr;
mod heredoc;
mod images;
mod instruction;
mod json;
mod mirror_name;
mod mount;
mod parser;
mod pattern;
mod platform;
mod reference;
mod rewrite;
mod shell;
mod stages;

pub use directives::{Directive, detect_syntax};
pub use error::{Error, ErrorKind};
pub use gostr::GoQuoted;
pub use heredoc::Heredoc;
pub use images::{ImageKind, ImageUse};
pub use instruction::Instruction;
pub use mirror_name::{registry_component, registry_from_component};
pub use parser::Dockerfile;
pub use platform::{Platform, PlatformError};
pub use reference::{ImageRef, Mirror, ReferenceError};
pub use rewrite::{Edit, Rewrite, SkipReason, Skipped};
pub use stages::{Base, MetaArg, Resolution, ResolveOptions, Stage};
