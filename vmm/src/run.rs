//! Running one workload in a fresh microVM: boot the kernel with an
//! initramfs holding `kiln-init`, give it the image's ext4 read-only, read
//! the exit status from the console report named by a per-run secret,
//! collect the console.

use std::path::PathBuf;
use std::time::Duration;

use kiln_init::InitConfig;

use crate::guest::{GUEST_MODULES, GuestKernel, initramfs};
use crate::{
    Accel, Disk, Error, Hypervisor, Machine, MemorySize, Network, Qemu, QemuVm, Serial, Vm,
    VmConfig, VmInfo, host_tsc_khz,
};

/// Kernel arguments for fast, quiet TCG boots (see the crate docs).
const CMDLINE: &str = "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check \
    cryptomgr.notests init_on_alloc=0 random.trust_cpu=on 8250.nr_uarts=1 rdinit=/init";

/// The guest's driver for [`Network::User`]'s virtio-net device.
const NET_MODULE: &str = "virtio_net";

/// A workload and the VM to run it in.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The QEMU binary (`qemu-system-x86_64`).
    pub qemu: PathBuf,
    /// Kernel and its modules.
    pub kernel: GuestKernel,
    /// The static `kiln-init` binary.
    pub init: PathBuf,
    /// The image's root file system (ext4, given read-only).
    pub disk: PathBuf,
    /// What to run (`root_device`, `report` and `modules` are filled in).
    pub workload: InitConfig,
    /// Guest memory.
    pub memory: MemorySize,
    /// vCPUs.
    pub cpus: u8,
    /// Machine type: microvm boots fastest (the kernel's `vmlinux`, see
    /// [`GuestKernel::pvh_image`], cached in the temp directory's
    /// `kiln-kernels`, when the kernel has PVH support); it needs the
    /// host's TSC frequency ([`host_tsc_khz`]) and falls back to q35
    /// without it.
    pub machine: Machine,
    /// The guest's network: with [`Network::User`], `kiln-init` configures
    /// `eth0` for QEMU's user-mode NAT (10.0.2.15/24, gateway 10.0.2.2 =
    /// the host's loopback, DNS 10.0.2.3 in `/etc/resolv.conf`).
    pub network: Network,
    /// Accelerator (see [`accel_canary`] to choose).
    pub accel: Accel,
    /// Where sockets, the initramfs, the console (`console.log`), the
    /// report secret (`report.nonce`, which a restore needs) and logs go
    /// (keep it short: socket paths are limited to 107 bytes).
    pub work_dir: PathBuf,
    /// How long the whole run may take.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// The workload's exit status (128 + signal when killed by one).
    pub exit_code: i32,
    /// Everything the guest printed on its console but `kiln-init`'s report
    /// (invalid UTF-8 replaced; the raw bytes are the work dir's
    /// `console.log`).
    pub console: String,
}

/// Boots the VM, runs the workload, waits for the guest to power off.
///
/// # Errors
///
/// [`Error::Guest`] when the guest could not run the workload (with its
/// message), [`Error::NoExitStatus`] when it stopped without reporting,
/// [`Error::GuestStopped`], [`Error::Timeout`] (QEMU is killed), or a start
/// error.
pub async fn run(spec: &RunSpec) -> Result<RunOutcome, Error> {
    GuestVm::start(spec).await?.finish(spec.timeout).await
}

/// A running guest: pause, resume, snapshot it, or wait for its workload.
#[derive(Debug)]
pub struct GuestVm {
    vm: QemuVm,
    serial: PathBuf,
    nonce: String,
}

impl GuestVm {
    /// Boots `spec` and returns once QEMU runs (the workload starts soon
    /// after).
    ///
    /// # Errors
    ///
    /// Start errors (see [`run`]).
    pub async fn start(spec: &RunSpec) -> Result<Self, Error> {
        let (qemu, config, nonce) = prepare(spec, true)?;
        let vm = qemu.start(&config, &spec.work_dir).await?;
        Ok(Self::new(vm, &config, nonce))
    }

    /// Restores a guest from the directory `snapshot` (written by
    /// [`GuestVm::snapshot`] of a guest started from the same `spec`) and
    /// resumes it; the workload continues where it was.
    ///
    /// # Errors
    ///
    /// Start errors, or the snapshot not loading within `spec.timeout`.
    pub async fn restore(spec: &RunSpec, snapshot: &std::path::Path) -> Result<Self, Error> {
        let (qemu, config, nonce) = prepare(spec, false)?;
        let vm = qemu
            .restore(&config, &spec.work_dir, snapshot, spec.timeout)
            .await?;
        Ok(Self::new(vm, &config, nonce))
    }

    fn new(vm: QemuVm, config: &VmConfig, nonce: String) -> Self {
        let serial = match &config.serial {
            Serial::File(p) => p.clone(),
            _ => PathBuf::new(),
        };
        Self { vm, serial, nonce }
    }

    /// State, accelerator and capabilities.
    ///
    /// # Errors
    ///
    /// QMP errors.
    pub async fn info(&mut self) -> Result<VmInfo, Error> {
        self.vm.info().await
    }

    /// The QEMU process (status, pause, resume, QMP).
    pub fn qemu(&mut self) -> &mut QemuVm {
        &mut self.vm
    }

    /// Pauses the guest and writes its state into the directory `dir` (it
    /// stays paused; [`GuestVm::restore`] with the same [`RunSpec`],
    /// `work_dir` included, continues it).
    ///
    /// # Errors
    ///
    /// QMP errors, a path QEMU's shell would reinterpret, or a timeout.
    pub async fn snapshot(
        &mut self,
        dir: &std::path::Path,
        deadline: Duration,
    ) -> Result<(), Error> {
        self.vm.snapshot(dir, deadline).await
    }

    /// Stops QEMU at once (after a snapshot, say).
    ///
    /// # Errors
    ///
    /// When QEMU does not exit within `deadline` (it is then killed).
    pub async fn quit(self, deadline: Duration) -> Result<(), Error> {
        self.vm.quit(deadline).await.map(drop)
    }

    /// Graceful shutdown: presses the ACPI power button (`kiln-init` sends
    /// the workload its stop signal), waits up to `deadline` for the
    /// workload to exit and the guest to power off, else kills QEMU.
    ///
    /// # Errors
    ///
    /// As [`run`]; [`Error::Timeout`] when the deadline passed.
    pub async fn shutdown(mut self, deadline: Duration) -> Result<RunOutcome, Error> {
        // A guest that has just powered off cannot take the press; its
        // outcome is what `finish` reads either way.
        let _ = self.vm.power_button().await;
        self.finish(deadline).await
    }

    /// Waits for the workload to finish and the guest to power off.
    ///
    /// # Errors
    ///
    /// As [`run`].
    pub async fn finish(self, timeout: Duration) -> Result<RunOutcome, Error> {
        watch(self.vm, timeout, &self.serial).await?;
        let raw = std::fs::read(&self.serial).unwrap_or_default();
        let Some((output, report)) = kiln_init::split_report(&raw, &self.nonce) else {
            return Err(Error::NoExitStatus {
                console: tail(&String::from_utf8_lossy(&raw)),
            });
        };
        let console = String::from_utf8_lossy(&output).into_owned();
        if let Some(code) = report.strip_prefix("exit=")
            && let Ok(exit_code) = code.trim().parse()
        {
            return Ok(RunOutcome { exit_code, console });
        }
        Err(Error::Guest {
            message: report.strip_prefix("error=").unwrap_or(&report).to_string(),
            console: tail(&console),
        })
    }
}

/// The backend and VM for `spec`, and the secret naming the guest's report;
/// writes the initramfs when `fresh` (a restore reuses the one the
/// snapshotted guest booted from, and its secret).
fn prepare(spec: &RunSpec, fresh: bool) -> Result<(Qemu, VmConfig, String), Error> {
    let initrd = spec.work_dir.join("initramfs.cpio");
    let nonce_file = spec.work_dir.join("report.nonce");
    let work_err = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| Error::WorkDir { path, source }
    };
    let nonce = if fresh {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(Error::Io)?;
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    } else {
        let nonce = std::fs::read_to_string(&nonce_file).map_err(work_err(&nonce_file))?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidConfig(format!(
                "{} does not hold a report secret",
                nonce_file.display()
            )));
        }
        nonce
    };
    if fresh {
        // The console carries the report: no virtio-serial driver needed.
        let mut wanted: Vec<&str> = GUEST_MODULES
            .iter()
            .copied()
            .filter(|m| *m != "virtio_console")
            .collect();
        let mut init_config = spec.workload.clone();
        if spec.network == Network::User {
            wanted.push(NET_MODULE);
            init_config.network = Some(kiln_init::NetworkConfig::USER_MODE);
        }
        let modules = spec.kernel.module_closure(&wanted)?;
        init_config.root_device = "/dev/vda".into();
        // The report comes on the console, named by the secret: no channel
        // device (its guest driver costs boot time and ~8 MiB).
        init_config.channel = String::new();
        init_config.report.clone_from(&nonce);
        std::fs::create_dir_all(&spec.work_dir).map_err(|source| Error::WorkDir {
            path: spec.work_dir.clone(),
            source,
        })?;
        std::fs::write(&nonce_file, &nonce).map_err(work_err(&nonce_file))?;
        let cpio = initramfs(&spec.init, &modules, &init_config)?;
        std::fs::write(&initrd, cpio).map_err(|source| Error::WorkDir {
            path: initrd.clone(),
            source,
        })?;
    }
    let mut qemu = Qemu::new(spec.accel);
    qemu.binary.clone_from(&spec.qemu);
    qemu.machine = spec.machine;
    let mut cmdline = CMDLINE.to_owned();
    let mut kernel = spec.kernel.image.clone();
    if qemu.machine == Machine::Microvm {
        match host_tsc_khz() {
            Some(khz) => cmdline.push_str(&format!(" tsc_early_khz={khz}")),
            None => qemu.machine = Machine::Q35,
        }
    }
    if qemu.machine == Machine::Microvm {
        // PVH boot of the uncompressed kernel where the kernel allows it
        // (else the bzImage boots as it is).
        match spec
            .kernel
            .pvh_image(&std::env::temp_dir().join("kiln-kernels"))
        {
            Ok(vmlinux) => kernel = vmlinux,
            Err(Error::KernelImage(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let config = VmConfig {
        initrd: Some(initrd),
        cmdline,
        cpus: spec.cpus,
        memory: spec.memory,
        disks: vec![Disk::new(&spec.disk, true)],
        serial: Serial::File(spec.work_dir.join("console.log")),
        network: spec.network,
        ..VmConfig::new(kernel)
    };
    Ok((qemu, config, nonce))
}

/// Decides the accelerator by a short canary boot: `/dev/kvm` must exist
/// *and* the kernel must reach `kiln-init` under KVM within `deadline`
/// (the init then reports that it has nothing to run). On machines whose
/// `/dev/kvm` cannot run stock kernels (see the crate docs) the canary
/// fails and TCG is used. Returns the choice and why.
pub async fn accel_canary(
    kernel: &GuestKernel,
    init: &std::path::Path,
    work_dir: &std::path::Path,
    deadline: Duration,
) -> (Accel, String) {
    if !std::path::Path::new("/dev/kvm").exists() {
        return (Accel::Tcg, "no /dev/kvm".into());
    }
    let disk = work_dir.join("canary.img");
    if std::fs::create_dir_all(work_dir).is_err()
        || std::fs::write(&disk, vec![0u8; 1 << 20]).is_err()
    {
        return (Accel::Tcg, format!("cannot write {}", disk.display()));
    }
    let spec = RunSpec {
        qemu: "qemu-system-x86_64".into(),
        kernel: kernel.clone(),
        init: init.to_owned(),
        disk,
        workload: InitConfig::default(),
        memory: MemorySize::from_mib(128).unwrap_or_else(|_| unreachable!()),
        cpus: 1,
        machine: Machine::Microvm,
        network: Network::None,
        accel: Accel::Kvm,
        work_dir: work_dir.to_owned(),
        timeout: deadline,
    };
    match run(&spec).await {
        Err(Error::Guest { message, .. }) if message.contains("nothing to run") => {
            (Accel::Kvm, "a canary guest booted under KVM".into())
        }
        Err(e) => (Accel::Tcg, format!("the KVM canary failed: {e}")),
        Ok(_) => (Accel::Tcg, "the KVM canary behaved unexpectedly".into()),
    }
}

/// Waits for QEMU to exit, polling its state: a guest the VMM stopped with
/// an internal error (a KVM that cannot run it) fails at once instead of
/// at the deadline; QEMU is killed on every failure.
async fn watch(mut vm: QemuVm, timeout: Duration, serial: &std::path::Path) -> Result<(), Error> {
    let start = std::time::Instant::now();
    loop {
        if vm.try_wait()?.is_some() {
            return Ok(());
        }
        let status = tokio::time::timeout(Duration::from_secs(5), vm.status()).await;
        if let Ok(Ok(status)) = status
            && matches!(status.as_str(), "internal-error" | "guest-panicked")
        {
            let _ = vm.kill().await;
            let console =
                String::from_utf8_lossy(&std::fs::read(serial).unwrap_or_default()).into_owned();
            return Err(Error::GuestStopped {
                status,
                console: tail(&console),
            });
        }
        if start.elapsed() > timeout {
            let _ = vm.kill().await;
            return Err(Error::Timeout {
                what: "the guest to finish".into(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines of the console, for error messages.
fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
