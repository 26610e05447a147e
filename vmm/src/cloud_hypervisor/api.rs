//! Request and response bodies of Cloud Hypervisor's REST API, named and
//! shaped as the schemas of its OpenAPI document (`cloud-hypervisor.yaml`,
//! `components/schemas`). Only the fields Kiln sets are modelled on the
//! request side; responses accept everything the document allows.

use serde::{Deserialize, Serialize};

/// `VmConfig` (the body of `vm.create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// `cpus`.
    pub cpus: CpusConfig,
    /// `memory`.
    pub memory: MemoryConfig,
    /// `payload` (required).
    pub payload: PayloadConfig,
    /// `disks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// `serial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<ConsoleConfig>,
    /// `console` (the virtio console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
    /// `vsock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
}

/// `CpusConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    /// `boot_vcpus` (≥ 1).
    pub boot_vcpus: u8,
    /// `max_vcpus` (≥ 1).
    pub max_vcpus: u8,
}

/// `MemoryConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// `size` in bytes.
    pub size: u64,
    /// `hotplug_size`: how much memory `vm.resize` may add, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<u64>,
    /// `hotplug_method`: `Acpi` (the default; shrinking needs a reboot)
    /// or `VirtioMem` (grows and shrinks while the guest runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_method: Option<String>,
}

/// `PayloadConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadConfig {
    /// `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `cmdline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// `initramfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<String>,
    /// `firmware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
}

/// `DiskConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// `path`.
    pub path: String,
    /// `readonly`.
    #[serde(default)]
    pub readonly: bool,
    /// `rate_limiter_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter_config: Option<RateLimiterConfig>,
}

/// `RateLimiterConfig`: independent bytes/s and ops/s limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiterConfig {
    /// `bandwidth` (tokens are bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// `ops` (tokens are requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// `TokenBucket`: `size` tokens, refilled over `refill_time` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// `size` (≥ 0).
    pub size: u64,
    /// `one_time_burst` (≥ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// `refill_time` in milliseconds (≥ 0).
    pub refill_time: u64,
}

/// `ConsoleMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleMode {
    /// `Off`.
    Off,
    /// `Pty`.
    Pty,
    /// `Tty`.
    Tty,
    /// `File`.
    File,
    /// `Socket`.
    Socket,
    /// `Null`.
    Null,
}

/// `ConsoleConfig` / `SerialConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfig {
    /// `mode` (required).
    pub mode: ConsoleMode,
    /// `file`, for `File`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `socket`, for `Socket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// `VsockConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    /// `cid` (≥ 3).
    pub cid: u64,
    /// `socket`: the host unix socket proxying vsock connections.
    pub socket: String,
}

/// `VmResize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmResize {
    /// `desired_vcpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_vcpus: Option<u8>,
    /// `desired_ram` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_ram: Option<u64>,
}

/// `VmSnapshotConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSnapshotConfig {
    /// `destination_url` (`file:///dir`).
    pub destination_url: String,
}

/// `RestoreConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreConfig {
    /// `source_url` (`file:///dir`, required).
    pub source_url: String,
    /// `prefault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefault: Option<bool>,
}

/// `VmState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// `Created`.
    Created,
    /// `Running`.
    Running,
    /// `Shutdown`.
    Shutdown,
    /// `Paused`.
    Paused,
    /// `BreakPoint`.
    BreakPoint,
}

/// `VmInfo` (the body of `vm.info`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VmInfo {
    /// `config` as the VMM reports it (all of `VmConfig`, kept as JSON).
    pub config: serde_json::Value,
    /// `state`.
    pub state: VmState,
    /// `memory_actual_size`.
    #[serde(default)]
    pub memory_actual_size: Option<u64>,
}

/// `VmmPingResponse` (the body of `vmm.ping`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VmmPingResponse {
    /// `version` (required).
    pub version: String,
    /// `build_version`.
    #[serde(default)]
    pub build_version: Option<String>,
    /// `pid`.
    #[serde(default)]
    pub pid: Option<i64>,
    /// `features`.
    #[serde(default)]
    pub features: Vec<String>,
}
