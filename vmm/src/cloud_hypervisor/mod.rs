//! The Cloud Hypervisor backend: its REST API (request and response types
//! from its OpenAPI document, an HTTP/1.1 client over the API unix socket)
//! and [`CloudHypervisor`], the [`crate::Hypervisor`] that starts the
//! process and boots a [`crate::VmConfig`] through that API.
//!
//! Cloud Hypervisor needs hardware KVM, which the machines these tests run
//! on do not have; the client and the backend are checked against the API
//! document itself (see the integration tests).

mod api;
mod client;
mod vm;

pub use api::{
    ConsoleConfig, ConsoleMode, CpusConfig, DiskConfig, MemoryConfig, PayloadConfig,
    RateLimiterConfig, RestoreConfig, TokenBucket, VmConfig, VmInfo, VmResize, VmSnapshotConfig,
    VmState, VmmPingResponse, VsockConfig,
};
pub use client::{ChClient, Endpoint, Response, decode_response, encode_request};
pub use vm::{ChVm, CloudHypervisor, api_config};
