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

mod config;
mod cpio;
mod error;
mod qemu;
mod qmp;

pub use config::{MAX_SOCKET_PATH, MemorySize, SocketPath};
pub use cpio::CpioWriter;
pub use error::Error;
pub use qemu::{Accel, Machine, QemuConfig, QemuVm};
pub use qmp::{Event, Message, Qmp, decode};
