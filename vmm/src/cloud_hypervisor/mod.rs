//! The Cloud Hypervisor backend: its REST API (request and response types
//! from its OpenAPI document, an HTTP/1.1 client over the API unix socket).
//!
//! Cloud Hypervisor needs hardware KVM, which the machines these tests run
//! on do not have; the client is checked against the API document itself
//! (see the integration tests).

mod api;
mod client;

pub use api::{
    ConsoleConfig, ConsoleMode, CpusConfig, DiskConfig, MemoryConfig, PayloadConfig, RestoreConfig,
    VmConfig, VmInfo, VmResize, VmSnapshotConfig, VmState, VmmPingResponse, VsockConfig,
};
pub use client::{ChClient, Endpoint, Response, decode_response, encode_request};
