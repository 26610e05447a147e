//! What each VMM backend can do: callers check a capability before they
//! pause, snapshot, resize or open a vsock.

use std::fmt;

use crate::{Accel, Error};

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
    /// Hardware virtualization in use (KVM) rather than emulation.
    pub hardware_virtualization: bool,
}

/// A VMM backend, for capability checks before use.
pub trait Hypervisor {
    /// `qemu` or `cloud-hypervisor`.
    fn name(&self) -> &'static str;
    /// What it can do here.
    fn capabilities(&self) -> Capabilities;
}

/// QEMU, as [`crate::GuestVm`] drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qemu {
    /// The accelerator chosen (see [`crate::accel_canary`]).
    pub accel: Accel,
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            snapshot: true,
            // No balloon or memory hotplug wired up yet.
            memory_resize: false,
            // Needs /dev/vhost-vsock on the host (absent on the CI machines).
            vsock: std::path::Path::new("/dev/vhost-vsock").exists(),
            disk_io_limits: false,
            graceful_shutdown: true,
            hardware_virtualization: self.accel == Accel::Kvm,
        }
    }
}

/// Cloud Hypervisor (always KVM), through [`crate::cloud_hypervisor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloudHypervisor;

impl Hypervisor for CloudHypervisor {
    fn name(&self) -> &'static str {
        "cloud-hypervisor"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            snapshot: true,
            memory_resize: true,
            vsock: true,
            disk_io_limits: true,
            graceful_shutdown: true,
            hardware_virtualization: true,
        }
    }
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
        let tcg = Qemu { accel: Accel::Tcg }.capabilities();
        assert!(tcg.pause && tcg.snapshot && tcg.graceful_shutdown);
        assert!(!tcg.hardware_virtualization && !tcg.memory_resize);
        assert!(
            Qemu { accel: Accel::Kvm }
                .capabilities()
                .hardware_virtualization
        );
        let ch = CloudHypervisor.capabilities();
        assert!(ch.memory_resize && ch.vsock && ch.hardware_virtualization);
        assert_eq!(CloudHypervisor.name(), "cloud-hypervisor");
    }
}
