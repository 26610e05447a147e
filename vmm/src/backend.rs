//! The backend trait: a [`Hypervisor`] boots a [`VmConfig`] into a
//! [`Vm`]; its [`Capabilities`] say which optional operations work, so
//! callers check before they pause, snapshot, resize or open a vsock.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use crate::{Error, Vm, VmConfig};

/// Optional abilities of a backend (boot, wait and stop are always there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Pause and resume the vCPUs.
    pub pause: bool,
    /// Snapshot a running guest and restore it.
    pub snapshot: bool,
    /// Change guest memory while it runs.
    pub memory_resize: bool,
    /// virtio-vsock host↔guest sockets.
    pub vsock: bool,
    /// Per-disk I/O rate limits.
    pub disk_io_limits: bool,
    /// Graceful shutdown through an ACPI power button.
    pub graceful_shutdown: bool,
    /// [`crate::Network::User`] (NAT inside the VMM, no host setup).
    pub user_network: bool,
    /// Hardware virtualization in use (KVM) rather than emulation.
    pub hardware_virtualization: bool,
}

/// A VMM backend: [`crate::Qemu`] or [`crate::CloudHypervisor`].
pub trait Hypervisor {
    /// The running VM it gives.
    type Vm: Vm;

    /// `qemu` or `cloud-hypervisor`.
    fn name(&self) -> &'static str;

    /// What it can do here.
    fn capabilities(&self) -> Capabilities;

    /// Starts the VMM and boots `config`; sockets and logs go to `work_dir`
    /// (keep it short: unix socket paths are limited to 107 bytes). The VMM
    /// process is killed when the returned VM is dropped.
    fn start(
        &self,
        config: &VmConfig,
        work_dir: &Path,
    ) -> impl Future<Output = Result<Self::Vm, Error>> + Send;

    /// Starts a VM from the directory a [`Vm::snapshot`] of a VM booted
    /// with the same `config` wrote, and resumes it where it was.
    fn restore(
        &self,
        config: &VmConfig,
        work_dir: &Path,
        snapshot: &Path,
        deadline: Duration,
    ) -> impl Future<Output = Result<Self::Vm, Error>> + Send;
}

/// A vsock context id: 3 and up (0–2 are the hypervisor, local and host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cid(u32);

impl Cid {
    /// Validates `cid`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCid`] for 0, 1, 2 and `u32::MAX` (`VMADDR_CID_ANY`).
    pub fn new(cid: u32) -> Result<Self, Error> {
        if cid < 3 || cid == u32::MAX {
            return Err(Error::InvalidCid(cid));
        }
        Ok(Self(cid))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Cid {
    type Error = Error;

    fn try_from(cid: u32) -> Result<Self, Error> {
        Self::new(cid)
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_below_three_are_reserved() {
        for bad in [0, 1, 2, u32::MAX] {
            assert!(Cid::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Cid::new(3).unwrap().get(), 3);
        assert_eq!(Cid::try_from(42).unwrap().to_string(), "42");
    }

    #[test]
    fn capabilities_say_what_each_backend_does() {
        use crate::{Accel, CloudHypervisor, Hypervisor, Qemu};
        let tcg = Qemu::new(Accel::Tcg).capabilities();
        assert!(tcg.pause && tcg.snapshot && tcg.graceful_shutdown && tcg.disk_io_limits);
        assert!(tcg.user_network);
        assert!(!tcg.hardware_virtualization && !tcg.memory_resize);
        assert!(Qemu::new(Accel::Kvm).capabilities().hardware_virtualization);
        let ch = CloudHypervisor::new("cloud-hypervisor");
        let caps = ch.capabilities();
        assert!(caps.memory_resize && caps.vsock && caps.hardware_virtualization);
        assert!(!caps.user_network);
        assert_eq!(ch.name(), "cloud-hypervisor");
    }
}
