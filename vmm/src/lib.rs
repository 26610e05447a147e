//! One API over KVM VMMs. This first slice drives QEMU: a command-line
//! builder (microvm or q35, TCG or KVM), an async QMP client (greeting,
//! capabilities, commands, events), and the process lifecycle (start,
//! status, pause, resume, snapshot to a file and restore from it, quit;
//! killed on drop, so no orphans), and a cpio "newc" writer for
//! initramfs images.
//!
//! ```no_run
//! # async fn run() -> Result<(), kiln_vmm::Error> {
//! use std::time::Duration;
//! use kiln_vmm::{QemuConfig, QemuVm, SocketPath};
//! let mut cfg = QemuConfig::new(SocketPath::new("/tmp/vm1.qmp")?);
//! cfg.kernel = Some("vmlinux".into());
//! let mut vm = QemuVm::start(&cfg).await?;
//! vm.pause().await?;
//! vm.resume().await?;
//! vm.quit(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every call returns the typed [`Error`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cloud_hypervisor;
mod config;
mod cpio;
mod error;
mod guest;
mod qemu;
mod qmp;
mod run;

pub use config::{MAX_SOCKET_PATH, MemorySize, SocketPath};
pub use cpio::CpioWriter;
pub use error::Error;
pub use guest::{GUEST_MODULES, GuestKernel, initramfs};
pub use kiln_init::InitConfig;
pub use qemu::{Accel, CHANNEL_NAME, Disk, Machine, QemuConfig, QemuVm};
pub use qmp::{Event, Message, Qmp, decode};
pub use run::{RunOutcome, RunSpec, accel_canary, run};
