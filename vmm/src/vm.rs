//! The backend-neutral VM: what to boot ([`VmConfig`]) and what a running
//! VM can do ([`Vm`]). [`crate::Hypervisor::start`] turns the one into the
//! other; callers check [`crate::Capabilities`] before the optional
//! operations.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::Duration;

use crate::{Capabilities, Cid, Error, MemorySize, SocketPath};

/// A raw disk image given to the guest as a virtio block device
/// (`/dev/vda`, `/dev/vdb`, ... in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// Read-only for the guest.
    pub read_only: bool,
    /// I/O rate limits, if any (see [`Capabilities::disk_io_limits`]).
    pub limits: Option<IoLimits>,
}

impl Disk {
    /// A disk without limits.
    pub fn new(path: impl Into<PathBuf>, read_only: bool) -> Self {
        Self {
            path: path.into(),
            read_only,
            limits: None,
        }
    }
}

/// Per-disk I/O limits (a token bucket refilled every second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoLimits {
    /// Bytes per second, read and write together.
    pub bytes_per_sec: Option<u64>,
    /// Requests per second, read and write together.
    pub ops_per_sec: Option<u64>,
}

/// Where the guest's serial console (`ttyS0`) goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Serial {
    /// Nowhere.
    #[default]
    None,
    /// Written to this file (truncated first).
    File(PathBuf),
    /// A byte stream the caller reads ([`Vm::take_console`]); a guest
    /// whose console is not read blocks once the pipe (64 KiB) is full.
    Stream,
}

/// The guest's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Network {
    /// No network device.
    #[default]
    None,
    /// User-mode NAT in the VMM process (no host privileges, no bridge):
    /// the guest is 10.0.2.15/24, the gateway 10.0.2.2 reaches the host's
    /// `127.0.0.1`, DNS is 10.0.2.3 (the host's resolver); outgoing
    /// connections only (see [`kiln_init::NetworkConfig::USER_MODE`]).
    User,
}

/// What to boot, for any backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel image (bzImage, or an uncompressed `vmlinux` for PVH).
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs (at least 1).
    pub cpus: u8,
    /// Guest memory.
    pub memory: MemorySize,
    /// The most memory [`Vm::resize_memory`] may give the guest (backends
    /// reserve it at boot); `None`: fixed at `memory`.
    pub memory_max: Option<MemorySize>,
    /// Block devices, in order.
    pub disks: Vec<Disk>,
    /// The serial console.
    pub serial: Serial,
    /// The host↔guest channel: a unix socket on the host, the
    /// virtio-serial port [`crate::CHANNEL_NAME`] in the guest.
    pub channel: Option<SocketPath>,
    /// The network.
    pub network: Network,
    /// A virtio-vsock device with this context id (see
    /// [`Capabilities::vsock`]).
    pub vsock: Option<Cid>,
}

impl VmConfig {
    /// 1 vCPU, 256 MiB, no initrd, disks, console, channel, network or vsock.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            cpus: 1,
            memory: MemorySize::from_mib(256).unwrap_or_else(|_| unreachable!()),
            memory_max: None,
            disks: Vec::new(),
            serial: Serial::None,
            channel: None,
            network: Network::None,
            vsock: None,
        }
    }
}

/// A VM's run state, named alike for every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmState {
    /// Created, not started (or waiting for an incoming snapshot).
    Created,
    /// vCPUs running.
    Running,
    /// vCPUs stopped ([`Vm::pause`], or after a snapshot).
    Paused,
    /// The guest has shut down.
    Shutdown,
    /// Stopped by the VMM on an error (e.g. a KVM emulation failure, a
    /// guest panic): the backend's own word for it.
    Failed(String),
    /// Any other backend state, as the backend names it.
    Other(String),
}

/// What [`Vm::info`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmInfo {
    /// The run state.
    pub state: VmState,
    /// `qemu` or `cloud-hypervisor`.
    pub hypervisor: &'static str,
    /// Whether the guest runs on hardware virtualization (KVM).
    pub hardware_virtualization: bool,
    /// What this VM can do.
    pub capabilities: Capabilities,
}

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmExit {
    /// The VMM process's exit status, when this process started it.
    pub status: Option<ExitStatus>,
    /// Whether it had to be killed (the deadline passed).
    pub killed: bool,
}

/// The guest's serial console as a byte stream ([`Serial::Stream`]).
pub type Console = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A running VM. Optional operations fail with [`Error::Unsupported`] when
/// the backend's [`Capabilities`] say it cannot do them.
pub trait Vm: Send {
    /// State, backend and capabilities.
    fn info(&mut self) -> impl Future<Output = Result<VmInfo, Error>> + Send;

    /// Stops the vCPUs.
    fn pause(&mut self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Runs the vCPUs again.
    fn resume(&mut self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Writes the VM's state (vCPUs, devices, memory; not the disks'
    /// contents) into the directory `dir` (created if missing); the VM is
    /// paused first (if it runs) and stays paused. Restore with
    /// [`crate::Hypervisor::restore`] and the same [`VmConfig`].
    fn snapshot(
        &mut self,
        dir: &Path,
        deadline: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Changes the guest's memory while it runs.
    fn resize_memory(
        &mut self,
        memory: MemorySize,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The console stream, once (only with [`Serial::Stream`]).
    fn take_console(&mut self) -> Option<Console>;

    /// Presses the ACPI power button: the guest's init decides what to do
    /// (`kiln-init` stops the workload with its stop signal).
    fn power_button(&mut self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Waits for the VM to stop by itself; kills it after `deadline`.
    fn wait(self, deadline: Duration) -> impl Future<Output = Result<VmExit, Error>> + Send;

    /// Graceful shutdown: the power button, then up to `deadline` for the
    /// guest to power off, then kill.
    fn shutdown(self, deadline: Duration) -> impl Future<Output = Result<VmExit, Error>> + Send
    where
        Self: Sized,
    {
        async move {
            let mut vm = self;
            // A guest that already stopped cannot take the press.
            let _ = vm.power_button().await;
            vm.wait(deadline).await
        }
    }

    /// Stops the VM at once.
    fn kill(self) -> impl Future<Output = Result<(), Error>> + Send;
}
