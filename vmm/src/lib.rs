//! One API over KVM VMMs: a [`Hypervisor`] ([`Qemu`] or
//! [`CloudHypervisor`]) boots a [`VmConfig`] (kernel, initrd, cmdline,
//! vCPUs, memory, disks with optional I/O limits, serial console to a file
//! or a stream, a host↔guest channel, no or user-mode network, vsock) into
//! a [`Vm`] (info, pause, resume, snapshot to a directory and restore,
//! memory resize, power button, graceful shutdown with a deadline, wait,
//! kill); its [`Capabilities`] say which optional operations work. The
//! QEMU backend is real: a command-line builder (microvm or q35, TCG or
//! KVM), an async QMP client, and the process lifecycle (killed on drop, so
//! no orphans). [`run`] and [`GuestVm`] boot an image's
//! ext4 with the static `kiln-init` (crate `kiln-init`) in an initramfs
//! built here ([`initramfs`], [`CpioWriter`], kernel modules resolved by
//! [`GuestKernel`]) and return the workload's exit status; [`accel_canary`]
//! decides whether KVM really works. The Cloud Hypervisor backend's REST
//! client ([`cloud_hypervisor`]) is checked against its OpenAPI document.
//!
//! ```no_run
//! # async fn example() -> Result<(), kiln_vmm::Error> {
//! use std::time::Duration;
//! use kiln_vmm::{Accel, GuestKernel, InitConfig, Machine, MemorySize, Network, RunSpec, run};
//! let spec = RunSpec {
//!     qemu: "qemu-system-x86_64".into(),
//!     kernel: GuestKernel::from_image("/srv/kernel/boot/vmlinuz-6.1.0-48-cloud-amd64")?,
//!     init: "kiln-init".into(),
//!     disk: "rootfs.ext4".into(),
//!     workload: InitConfig { argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()], ..InitConfig::default() },
//!     memory: MemorySize::from_mib(256)?,
//!     cpus: 1,
//!     machine: Machine::Microvm,
//!     network: Network::None,
//!     accel: Accel::Tcg,
//!     work_dir: "/tmp/vm1".into(),
//!     timeout: Duration::from_secs(60),
//! };
//! let outcome = run(&spec).await?;
//! print!("{}", outcome.console);
//! std::process::exit(outcome.exit_code);
//! # }
//! ```
//!
//! # Errors
//!
//! Every call returns the typed [`Error`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
pub mod cloud_hypervisor;
mod config;
mod cpio;
mod error;
mod guest;
mod qemu;
mod qmp;
mod run;
mod vm;
pub mod vmlinux;

pub use backend::{Capabilities, Cid, Hypervisor};
pub use cloud_hypervisor::{ChVm, CloudHypervisor};
pub use config::{MAX_SOCKET_PATH, MemorySize, SocketPath};
pub use cpio::CpioWriter;
pub use error::Error;
pub use guest::{GUEST_MODULES, GuestKernel, initramfs};
pub use kiln_init::{InitConfig, NetworkConfig, REPORT_PREFIX, split_report, streamable};
pub use qemu::{Accel, CHANNEL_NAME, Machine, Qemu, QemuConfig, QemuVm, host_tsc_khz};
pub use qmp::{Event, Message, Qmp, decode};
pub use run::{GuestVm, RunOutcome, RunSpec, accel_canary, run};
pub use vm::{Console, Disk, IoLimits, Network, Serial, Vm, VmConfig, VmExit, VmInfo, VmState};
