//! A running QEMU: its process and QMP connection, as a [`Vm`].

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, ChildStdout, Command};

use super::{Accel, QemuConfig};
use crate::qmp::Qmp;
use crate::{Console, Error, MemorySize, Serial, Vm, VmExit, VmInfo, VmState};

/// A running QEMU, killed when dropped (no orphaned processes).
#[derive(Debug)]
pub struct QemuVm {
    child: Child,
    qmp: Qmp,
    accel: Accel,
    console: Option<ChildStdout>,
    log: Option<PathBuf>,
}

impl QemuVm {
    /// Starts QEMU and connects to its QMP socket.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`]; [`Error::Exited`] (with QEMU's message) when it
    /// stops before QMP answers; [`Error::Timeout`].
    pub async fn start(config: &QemuConfig) -> Result<Self, Error> {
        if config.vsock.is_some() && !vhost_vsock() {
            return Err(Error::Unsupported {
                backend: "qemu",
                feature: "vsock (this host has no /dev/vhost-vsock)",
            });
        }
        if let Some(incoming) = &config.incoming {
            // QEMU runs `exec:cat FILE` through /bin/sh.
            shell_safe(incoming)?;
        }
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
            .stdout(if config.serial == Serial::Stream {
                Stdio::piped()
            } else {
                Stdio::null()
            })
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
                        return Err(exited(status, config.log.as_deref()));
                    }
                    return Err(e);
                }
            },
            status = child.wait() => {
                let status = status.map_err(Error::Io)?;
                return Err(exited(status, config.log.as_deref()));
            }
        };
        let console = child.stdout.take();
        Ok(Self {
            child,
            qmp,
            accel: config.accel,
            console,
            log: config.log.clone(),
        })
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

    /// Writes the VM's state (devices and memory) to `file` (the guest is
    /// paused first and stays paused). Restore with
    /// [`QemuConfig::incoming`]; [`Vm::snapshot`] does this into a
    /// directory.
    ///
    /// # Errors
    ///
    /// A path with characters a shell would interpret (QEMU runs
    /// `exec:cat > FILE` through `/bin/sh`), QMP errors, a failed or slow
    /// migration.
    pub async fn migrate_to_file(&mut self, file: &Path, deadline: Duration) -> Result<(), Error> {
        let path = shell_safe(file)?;
        let _ = std::fs::remove_file(file);
        self.qmp.execute("stop", None).await?;
        // QEMU reports "completed" once it has written its last byte into
        // the pipe, perhaps before `cat` has: the file appears under its
        // name only when `cat` is done.
        self.qmp
            .execute(
                "migrate",
                Some(serde_json::json!({"uri": format!("exec:cat > {path}.part && mv {path}.part {path}")})),
            )
            .await?;
        let started = std::time::Instant::now();
        loop {
            let info = self.qmp.execute("query-migrate", None).await?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") if file.exists() => return Ok(()),
                Some("failed" | "cancelled") => {
                    return Err(Error::Command {
                        command: "migrate".into(),
                        class: "MigrationFailed".into(),
                        description: info.to_string(),
                    });
                }
                _ if started.elapsed() > deadline => {
                    // A migration left running would refuse the next one.
                    let _ = self.qmp.execute("migrate_cancel", None).await;
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
            let status = match self.status().await {
                Ok(status) => status,
                Err(e) => {
                    // QEMU exits when the snapshot does not load: say why.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(match self.child.try_wait() {
                        Ok(Some(status)) => exited(status, self.log.as_deref()),
                        _ => e,
                    });
                }
            };
            if status == "paused" {
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

    /// QEMU's exit status if it has exited, without waiting.
    ///
    /// # Errors
    ///
    /// When the process cannot be queried.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child.try_wait().map_err(Error::Io)
    }

    /// Ends QEMU at once (`quit`) and returns its exit status.
    ///
    /// # Errors
    ///
    /// When QEMU does not exit within `deadline` (it is then killed).
    pub async fn quit(mut self, deadline: Duration) -> Result<ExitStatus, Error> {
        // QEMU may close the socket before it answers; either is fine.
        let _ = self.qmp.execute("quit", None).await;
        match Vm::wait(self, deadline).await? {
            VmExit {
                status: Some(status),
                killed: false,
            } => Ok(status),
            _ => Err(Error::Timeout {
                what: "QEMU exit".into(),
                after: deadline,
            }),
        }
    }
}

/// The file a QEMU snapshot directory holds.
pub(crate) const SNAPSHOT_FILE: &str = "qemu-state.bin";

impl Vm for QemuVm {
    async fn info(&mut self) -> Result<VmInfo, Error> {
        let status = self.status().await?;
        let state = match status.as_str() {
            "running" => VmState::Running,
            "paused" | "postmigrate" => VmState::Paused,
            "prelaunch" | "inmigrate" => VmState::Created,
            "shutdown" => VmState::Shutdown,
            "internal-error" | "guest-panicked" | "io-error" => VmState::Failed(status),
            _ => VmState::Other(status),
        };
        Ok(VmInfo {
            state,
            hypervisor: "qemu",
            hardware_virtualization: self.accel == Accel::Kvm,
            capabilities: super::capabilities(self.accel),
        })
    }

    async fn pause(&mut self) -> Result<(), Error> {
        self.qmp.execute("stop", None).await.map(drop)
    }

    async fn resume(&mut self) -> Result<(), Error> {
        self.qmp.execute("cont", None).await.map(drop)
    }

    async fn snapshot(&mut self, dir: &Path, deadline: Duration) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::WorkDir {
            path: dir.to_owned(),
            source,
        })?;
        self.migrate_to_file(&dir.join(SNAPSHOT_FILE), deadline)
            .await
    }

    async fn resize_memory(&mut self, _memory: MemorySize) -> Result<(), Error> {
        Err(Error::Unsupported {
            backend: "qemu",
            feature: "memory resize",
        })
    }

    fn take_console(&mut self) -> Option<Console> {
        self.console.take().map(|c| Box::pin(c) as Console)
    }

    async fn power_button(&mut self) -> Result<(), Error> {
        self.qmp.execute("system_powerdown", None).await.map(drop)
    }

    async fn wait(mut self, deadline: Duration) -> Result<VmExit, Error> {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => Ok(VmExit {
                status: Some(status.map_err(Error::Io)?),
                killed: false,
            }),
            Err(_) => {
                self.child.kill().await.map_err(Error::Io)?;
                Ok(VmExit {
                    status: self.child.try_wait().map_err(Error::Io)?,
                    killed: true,
                })
            }
        }
    }

    async fn kill(mut self) -> Result<(), Error> {
        if self.child.try_wait().map_err(Error::Io)?.is_some() {
            return Ok(());
        }
        self.child.kill().await.map_err(Error::Io)
    }
}

/// Whether the host can give guests vsock devices.
pub(crate) fn vhost_vsock() -> bool {
    Path::new("/dev/vhost-vsock").exists()
}

/// `file` as text no shell would reinterpret.
fn shell_safe(file: &Path) -> Result<String, Error> {
    let s = file.to_str().unwrap_or_default();
    let ok = !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Error::InvalidSnapshotPath(file.to_owned()))
    }
}

fn exited(status: ExitStatus, log: Option<&Path>) -> Error {
    let stderr = log
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
