//! The QEMU backend: command line ([`QemuConfig`]), process and QMP
//! ([`QemuVm`]), and [`Qemu`], the [`Hypervisor`] that boots a
//! [`VmConfig`] with them.

mod command;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use command::{Accel, CHANNEL_NAME, Machine, QemuConfig};
pub use process::QemuVm;
pub(crate) use process::{SNAPSHOT_FILE, vhost_vsock};

use crate::{Capabilities, Error, Hypervisor, SocketPath, Vm, VmConfig};

/// QEMU as a [`Hypervisor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// The binary (`qemu-system-x86_64`).
    pub binary: PathBuf,
    /// Machine type (`microvm` by default; give the kernel
    /// `tsc_early_khz=` from [`host_tsc_khz`] there).
    pub machine: Machine,
    /// Accelerator (see [`crate::accel_canary`]).
    pub accel: Accel,
}

impl Qemu {
    /// `qemu-system-x86_64`, microvm, with `accel`.
    pub fn new(accel: Accel) -> Self {
        Self {
            binary: PathBuf::from("qemu-system-x86_64"),
            machine: Machine::Microvm,
            accel,
        }
    }

    /// The QEMU configuration for `vm`, with its QMP socket and log in
    /// `work_dir` (keep it short: socket paths are limited to 107 bytes).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSocketPath`], [`Error::WorkDir`].
    pub fn command(&self, vm: &VmConfig, work_dir: &Path) -> Result<QemuConfig, Error> {
        std::fs::create_dir_all(work_dir).map_err(|source| Error::WorkDir {
            path: work_dir.to_owned(),
            source,
        })?;
        let qmp = SocketPath::new(work_dir.join("qmp.sock"))?;
        let mut cfg = QemuConfig::for_vm(vm, self.machine, self.accel, qmp);
        cfg.binary.clone_from(&self.binary);
        cfg.log = Some(work_dir.join("qemu.log"));
        // A guest reboot ends the VM, as a power-off does.
        cfg.extra_args = vec!["-no-reboot".into()];
        Ok(cfg)
    }
}

impl Hypervisor for Qemu {
    type Vm = QemuVm;

    fn name(&self) -> &'static str {
        "qemu"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(self.accel)
    }

    async fn start(&self, vm: &VmConfig, work_dir: &Path) -> Result<QemuVm, Error> {
        QemuVm::start(&self.command(vm, work_dir)?).await
    }

    async fn restore(
        &self,
        vm: &VmConfig,
        work_dir: &Path,
        snapshot: &Path,
        deadline: Duration,
    ) -> Result<QemuVm, Error> {
        let mut cfg = self.command(vm, work_dir)?;
        cfg.incoming = Some(snapshot.join(SNAPSHOT_FILE));
        let mut qemu = QemuVm::start(&cfg).await?;
        qemu.wait_restored(deadline).await?;
        qemu.resume().await?;
        Ok(qemu)
    }
}

/// What QEMU with `accel` can do on this host.
fn capabilities(accel: Accel) -> Capabilities {
    Capabilities {
        pause: true,
        snapshot: true,
        // No balloon or memory hotplug wired up.
        memory_resize: false,
        // Needs /dev/vhost-vsock on the host (absent on the CI machines).
        vsock: vhost_vsock(),
        disk_io_limits: true,
        graceful_shutdown: true,
        user_network: true,
        hardware_virtualization: accel == Accel::Kvm,
    }
}

/// The host's TSC frequency in kHz, from `/proc/cpuinfo`, when the CPU has
/// a constant TSC and no frequency scaling is active (then `cpu MHz` is the
/// TSC's rate, as in virtual machines; with cpufreq it is the current
/// clock): what a microvm guest's `tsc_early_khz=` needs (without it, TCG
/// guests may hang calibrating against the PIT). `None` otherwise.
pub fn host_tsc_khz() -> Option<u64> {
    if Path::new("/sys/devices/system/cpu/cpu0/cpufreq").exists() {
        return None;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    tsc_khz(&cpuinfo)
}

fn tsc_khz(cpuinfo: &str) -> Option<u64> {
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let flags = field("flags")?;
    if !flags.split_whitespace().any(|f| f == "constant_tsc") {
        return None;
    }
    let mhz: f64 = field("cpu MHz")?.parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_frequency_needs_a_constant_tsc() {
        let info =
            "processor\t: 0\ncpu MHz\t\t: 2599.998\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n";
        assert_eq!(tsc_khz(info), Some(2_599_998));
        assert_eq!(tsc_khz(&info.replace("constant_tsc ", "")), None);
        assert_eq!(tsc_khz("flags: constant_tsc\n"), None);
    }
}
