//! The QEMU backend: command line, process, and lifecycle over QMP.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::qmp::Qmp;
use crate::{Error, MemorySize, SocketPath};

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Machine {
    /// `microvm` with virtio-mmio devices (the default: fastest to boot).
    #[default]
    Microvm,
    /// `q35` with virtio-pci devices.
    Q35,
}

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Accel {
    /// Software emulation (works everywhere).
    #[default]
    Tcg,
    /// Hardware virtualization (only where a canary boot proved it works).
    Kvm,
}

/// A raw disk image given to the guest as a virtio block device
/// (`/dev/vda`, `/dev/vdb`, ... in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// Read-only for the guest.
    pub read_only: bool,
}

/// The guest-side name of the host channel (a virtio-serial port).
pub const CHANNEL_NAME: &str = "kiln.0";

/// How to start QEMU.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The QEMU binary.
    pub binary: PathBuf,
    /// Machine type.
    pub machine: Machine,
    /// Accelerator.
    pub accel: Accel,
    /// Guest memory.
    pub memory: MemorySize,
    /// vCPUs.
    pub cpus: u8,
    /// Kernel image, if any.
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk, if any.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// The QMP control socket.
    pub qmp: SocketPath,
    /// Where the serial console goes (a file), if anywhere.
    pub serial: Option<PathBuf>,
    /// Where QEMU's own stderr goes (read back when it fails to start).
    pub log: Option<PathBuf>,
    /// Start with vCPUs stopped (`-S`): resume to run.
    pub start_paused: bool,
    /// Restore from a snapshot file written by [`QemuVm::snapshot`]: QEMU
    /// loads it and waits paused; [`QemuVm::resume`] continues the guest.
    /// The rest of the configuration must be the snapshotted VM's.
    pub incoming: Option<PathBuf>,
    /// Block devices, in order.
    pub disks: Vec<Disk>,
    /// The host↔guest channel: a unix socket QEMU listens on, connected to
    /// the guest's virtio-serial port [`CHANNEL_NAME`].
    pub channel: Option<SocketPath>,
    /// More arguments, appended as given.
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// `qemu-system-x86_64`, microvm, TCG, 256 MiB, 1 vCPU, no kernel.
    pub fn new(qmp: SocketPath) -> Self {
        Self {
            binary: PathBuf::from("qemu-system-x86_64"),
            machine: Machine::Microvm,
            accel: Accel::Tcg,
            memory: MemorySize::from_mib(256).unwrap_or_else(|_| unreachable!()),
            cpus: 1,
            kernel: None,
            initrd: None,
            cmdline: None,
            qmp,
            serial: None,
            log: None,
            start_paused: false,
            incoming: None,
            disks: Vec::new(),
            channel: None,
            extra_args: Vec::new(),
        }
    }

    /// The command-line arguments (without the binary).
    pub fn args(&self) -> Vec<String> {
        let machine = match self.machine {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
        };
        let accel = match self.accel {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        };
        let mut a: Vec<String> = vec![
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-machine".into(),
            machine.into(),
            "-accel".into(),
            accel.into(),
            "-m".into(),
            self.memory.to_string(),
            "-smp".into(),
            self.cpus.max(1).to_string(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", self.qmp),
        ];
        match &self.serial {
            Some(p) => a.extend(["-serial".into(), format!("file:{}", p.display())]),
            None => a.extend(["-serial".into(), "none".into()]),
        }
        if let Some(k) = &self.kernel {
            a.extend(["-kernel".into(), k.display().to_string()]);
        }
        if let Some(i) = &self.initrd {
            a.extend(["-initrd".into(), i.display().to_string()]);
        }
        if let Some(c) = &self.cmdline {
            a.extend(["-append".into(), c.clone()]);
        }
        if self.start_paused {
            a.push("-S".into());
        }
        if let Some(f) = &self.incoming {
            a.extend(["-incoming".into(), format!("exec:cat {}", f.display())]);
        }
        let (block, serial_bus) = match self.machine {
            Machine::Microvm => ("virtio-blk-device", "virtio-serial-device"),
            Machine::Q35 => ("virtio-blk-pci", "virtio-serial-pci"),
        };
        for (i, disk) in self.disks.iter().enumerate() {
            // QEMU option values escape a comma by doubling it.
            let file = disk.path.display().to_string().replace(',', ",,");
            let ro = if disk.read_only { ",readonly=on" } else { "" };
            a.extend([
                "-drive".into(),
                format!("file={file},if=none,id=disk{i},format=raw{ro}"),
                "-device".into(),
                format!("{block},drive=disk{i}"),
            ]);
        }
        if let Some(channel) = &self.channel {
            a.extend([
                "-chardev".into(),
                format!("socket,id=kiln0,path={channel},server=on,wait=off"),
                "-device".into(),
                format!("{serial_bus},id=vs0"),
                "-device".into(),
                format!("virtserialport,bus=vs0.0,chardev=kiln0,name={CHANNEL_NAME}"),
            ]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// A running QEMU, killed when dropped (no orphaned processes).
#[derive(Debug)]
pub struct QemuVm {
    child: Child,
    qmp: Qmp,
}

impl QemuVm {
    /// Starts QEMU and connects to its QMP socket.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`]; [`Error::Exited`] (with QEMU's message) when it
    /// stops before QMP answers; [`Error::Timeout`].
    pub async fn start(config: &QemuConfig) -> Result<Self, Error> {
        let _ = std::fs::remove_file(config.qmp.as_path());
        let stderr = match &config.log {
            Some(p) => std::fs::File::create(p)
                .map(Stdio::from)
                .map_err(|source| Error::Spawn {
                    program: config.binary.display().to_string(),
                    source,
                })?,
            None => Stdio::null(),
        };
        let mut child = Command::new(&config.binary)
            .args(config.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: config.binary.display().to_string(),
                source,
            })?;
        let connect = Qmp::connect(&config.qmp, Duration::from_secs(30));
        let qmp = tokio::select! {
            r = connect => match r {
                Ok(q) => q,
                Err(e) => {
                    // QEMU may close the socket an instant before it exits:
                    // give it a moment, so a failed start reports why.
                    if let Ok(Ok(status)) =
                        tokio::time::timeout(Duration::from_secs(2), child.wait()).await
                    {
                        return Err(exited(status, config));
                    }
                    return Err(e);
                }
            },
            status = child.wait() => {
                let status = status.map_err(Error::Io)?;
                return Err(exited(status, config));
            }
        };
        Ok(Self { child, qmp })
    }

    /// QEMU's process ID (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The QMP connection, for commands this type does not wrap.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// QEMU's run state (`prelaunch`, `running`, `paused`, ...).
    ///
    /// # Errors
    ///
    /// QMP errors.
    pub async fn status(&mut self) -> Result<String, Error> {
        let v = self.qmp.execute("query-status", None).await?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Stops the vCPUs.
    ///
    /// # Errors
    ///
    /// QMP errors.
    pub async fn pause(&mut self) -> Result<(), Error> {
        self.qmp.execute("stop", None).await.map(drop)
    }

    /// Runs the vCPUs.
    ///
    /// # Errors
    ///
    /// QMP errors.
    pub async fn resume(&mut self) -> Result<(), Error> {
        self.qmp.execute("cont", None).await.map(drop)
    }

    /// Writes the VM's state (devices and memory) to `file` (the guest is
    /// paused first and stays paused). Restore with
    /// [`QemuConfig::incoming`].
    ///
    /// # Errors
    ///
    /// A path with characters a shell would interpret (QEMU runs
    /// `exec:cat > FILE` through `/bin/sh`), QMP errors, a failed or slow
    /// migration.
    pub async fn snapshot(
        &mut self,
        file: &std::path::Path,
        deadline: Duration,
    ) -> Result<(), Error> {
        let path = shell_safe(file)?;
        self.pause().await?;
        self.qmp
            .execute(
                "migrate",
                Some(serde_json::json!({"uri": format!("exec:cat > {path}")})),
            )
            .await?;
        let started = std::time::Instant::now();
        loop {
            let info = self.qmp.execute("query-migrate", None).await?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    return Err(Error::Command {
                        command: "migrate".into(),
                        class: "MigrationFailed".into(),
                        description: info.to_string(),
                    });
                }
                _ if started.elapsed() > deadline => {
                    return Err(Error::Timeout {
                        what: "snapshot".into(),
                        after: deadline,
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Waits until an incoming snapshot is loaded (QEMU then sits paused).
    ///
    /// # Errors
    ///
    /// QMP errors, [`Error::Timeout`].
    pub async fn wait_restored(&mut self, deadline: Duration) -> Result<(), Error> {
        let started = std::time::Instant::now();
        loop {
            if self.status().await? == "paused" {
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(Error::Timeout {
                    what: "snapshot restore".into(),
                    after: deadline,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for QEMU to exit by itself (the guest powered off, or rebooted
    /// under `-no-reboot`) and returns its exit status.
    ///
    /// # Errors
    ///
    /// When it does not exit within `deadline` (it is then killed).
    pub async fn wait(mut self, deadline: Duration) -> Result<ExitStatus, Error> {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.map_err(Error::Io),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(Error::Timeout {
                    what: "QEMU exit".into(),
                    after: deadline,
                })
            }
        }
    }

    /// QEMU's exit status if it has exited, without waiting.
    ///
    /// # Errors
    ///
    /// When the process cannot be queried.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child.try_wait().map_err(Error::Io)
    }

    /// Kills QEMU and reaps it.
    ///
    /// # Errors
    ///
    /// When the process cannot be killed.
    pub async fn kill(mut self) -> Result<(), Error> {
        self.child.kill().await.map_err(Error::Io)
    }

    /// Ends QEMU at once (`quit`) and returns its exit status.
    ///
    /// # Errors
    ///
    /// When QEMU does not exit within `deadline` (it is then killed).
    pub async fn quit(mut self, deadline: Duration) -> Result<ExitStatus, Error> {
        // QEMU may close the socket before it answers; either is fine.
        let _ = self.qmp.execute("quit", None).await;
        self.wait(deadline).await
    }
}

/// `file` as text no shell would reinterpret.
fn shell_safe(file: &std::path::Path) -> Result<String, Error> {
    let s = file.to_str().unwrap_or_default();
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Error::InvalidSnapshotPath(file.to_owned()))
    }
}

fn exited(status: ExitStatus, config: &QemuConfig) -> Error {
    let stderr = config
        .log
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|s| {
            s.trim()
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        })
        .unwrap_or_default();
    Error::Exited {
        status: status.to_string(),
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let mut cfg = QemuConfig::new(SocketPath::new("/tmp/q.sock").unwrap());
        cfg.kernel = Some("/k/vmlinux".into());
        cfg.cmdline = Some("console=ttyS0 quiet".into());
        cfg.start_paused = true;
        let args = cfg.args();
        let joined = args.join(" ");
        assert!(joined.contains("-machine microvm -accel tcg -m 256M -smp 1"));
        assert!(joined.contains("-qmp unix:/tmp/q.sock,server=on,wait=off"));
        assert!(joined.contains("-kernel /k/vmlinux"));
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[append + 1], "console=ttyS0 quiet");
        assert_eq!(args.last().unwrap(), "-S");
    }
}
