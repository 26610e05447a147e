//! Cloud Hypervisor as a [`Hypervisor`]: the process started with
//! `--api-socket`, a [`crate::VmConfig`] turned into the API's `VmConfig`,
//! and the running VM driven through [`ChClient`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, ChildStdout, Command};

use super::api::{
    self, ConsoleConfig, ConsoleMode, CpusConfig, DiskConfig, MemoryConfig, PayloadConfig,
    RateLimiterConfig, TokenBucket, VmResize, VsockConfig,
};
use super::client::{ChClient, Endpoint};
use crate::{
    Capabilities, Console, Error, Hypervisor, IoLimits, MemorySize, Network, Serial, SocketPath,
    Vm, VmExit, VmInfo, VmState,
};

const BACKEND: &str = "cloud-hypervisor";

/// What Cloud Hypervisor can do (it always runs on KVM).
const CAPABILITIES: Capabilities = Capabilities {
    pause: true,
    snapshot: true,
    memory_resize: true,
    vsock: true,
    disk_io_limits: true,
    graceful_shutdown: true,
    user_network: false,
    hardware_virtualization: true,
};

/// Cloud Hypervisor (always KVM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudHypervisor {
    /// The `cloud-hypervisor` binary.
    pub binary: PathBuf,
}

impl CloudHypervisor {
    /// The backend running `binary`.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
        }
    }

    /// Starts the process with its API socket in `work_dir`, waits for the
    /// API to answer.
    async fn spawn(&self, work_dir: &Path, serial: &Serial) -> Result<ChVm, Error> {
        std::fs::create_dir_all(work_dir).map_err(|source| Error::WorkDir {
            path: work_dir.to_owned(),
            source,
        })?;
        let socket = SocketPath::new(work_dir.join("ch-api.sock"))?;
        let _ = std::fs::remove_file(socket.as_path());
        let log = work_dir.join("cloud-hypervisor.log");
        let spawn_err = |source| Error::Spawn {
            program: self.binary.display().to_string(),
            source,
        };
        let stderr = std::fs::File::create(&log).map_err(spawn_err)?;
        let mut child = Command::new(&self.binary)
            .arg("--api-socket")
            .arg(format!("path={}", socket.as_path().display()))
            .stdin(Stdio::null())
            .stdout(if *serial == Serial::Stream {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        let client = ChClient::new(socket);
        let started = Instant::now();
        loop {
            if client.ping().await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().map_err(Error::Io)? {
                return Err(Error::Exited {
                    status: status.to_string(),
                    stderr: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(Error::Timeout {
                    what: "the Cloud Hypervisor API socket".into(),
                    after: Duration::from_secs(10),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let console = child.stdout.take();
        Ok(ChVm {
            child: Some(child),
            client,
            console,
            memory_max: None,
        })
    }
}

impl Hypervisor for CloudHypervisor {
    type Vm = ChVm;

    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn start(&self, config: &crate::VmConfig, work_dir: &Path) -> Result<ChVm, Error> {
        let api_config = api_config(config, work_dir)?;
        if let Some(vsock) = &api_config.vsock {
            // Cloud Hypervisor binds it and fails if a killed VM left it.
            let _ = std::fs::remove_file(&vsock.socket);
        }
        let mut vm = self.spawn(work_dir, &config.serial).await?;
        vm.memory_max = memory_max(&api_config);
        vm.client.create(&api_config).await?;
        vm.client.action(Endpoint::VmBoot).await?;
        Ok(vm)
    }

    async fn restore(
        &self,
        config: &crate::VmConfig,
        work_dir: &Path,
        snapshot: &Path,
        deadline: Duration,
    ) -> Result<ChVm, Error> {
        // The snapshot holds the configuration (incl. the original vsock
        // socket path, which the snapshotted VM must no longer use); what
        // it cannot hold is still refused up front.
        let api_config = api_config(config, work_dir)?;
        remove_stale_vsock_socket(snapshot);
        let mut vm = self.spawn(work_dir, &config.serial).await?;
        vm.memory_max = memory_max(&api_config);
        vm.client.with_timeout(deadline).restore(snapshot).await?;
        // A restored VM comes back paused.
        vm.resume().await?;
        Ok(vm)
    }
}

/// The API's `VmConfig` for `vm` (a vsock's host socket goes to
/// `work_dir`).
///
/// # Errors
///
/// [`Error::Unsupported`] for a virtio-serial host channel (use vsock) and
/// user-mode networking (Cloud Hypervisor has tap devices only).
pub fn api_config(vm: &crate::VmConfig, work_dir: &Path) -> Result<api::VmConfig, Error> {
    if vm.channel.is_some() {
        return Err(Error::Unsupported {
            backend: BACKEND,
            feature: "a virtio-serial host channel (use vsock)",
        });
    }
    if vm.network == Network::User {
        return Err(Error::Unsupported {
            backend: BACKEND,
            feature: "user-mode networking (it has tap devices only)",
        });
    }
    let path = |p: &Path| p.display().to_string();
    let serial = match &vm.serial {
        Serial::None => ConsoleConfig {
            mode: ConsoleMode::Off,
            file: None,
            socket: None,
        },
        Serial::File(file) => ConsoleConfig {
            mode: ConsoleMode::File,
            file: Some(path(file)),
            socket: None,
        },
        Serial::Stream => ConsoleConfig {
            mode: ConsoleMode::Tty,
            file: None,
            socket: None,
        },
    };
    let cpus = vm.cpus.max(1);
    let size = vm.memory.mib() << 20;
    let hotplug_size = match vm.memory_max {
        Some(max) if max.mib() > vm.memory.mib() => {
            let extra = (max.mib() - vm.memory.mib()) << 20;
            // virtio-mem hands memory out in 128 MiB blocks.
            if !extra.is_multiple_of(128 << 20) {
                return Err(Error::InvalidConfig(format!(
                    "memory_max - memory = {} MiB: Cloud Hypervisor hotplugs 128 MiB blocks",
                    extra >> 20
                )));
            }
            Some(extra)
        }
        _ => None,
    };
    let vsock = match vm.vsock {
        Some(cid) => Some(VsockConfig {
            cid: u64::from(cid.get()),
            socket: path(SocketPath::new(work_dir.join("vsock.sock"))?.as_path()),
        }),
        None => None,
    };
    Ok(api::VmConfig {
        cpus: CpusConfig {
            boot_vcpus: cpus,
            max_vcpus: cpus,
        },
        memory: MemoryConfig {
            size,
            hotplug_method: hotplug_size.map(|_| "VirtioMem".to_owned()),
            hotplug_size,
        },
        payload: PayloadConfig {
            kernel: Some(path(&vm.kernel)),
            cmdline: Some(vm.cmdline.clone()).filter(|c| !c.is_empty()),
            initramfs: vm.initrd.as_deref().map(path),
            firmware: None,
        },
        disks: vm
            .disks
            .iter()
            .map(|d| DiskConfig {
                path: path(&d.path),
                readonly: d.read_only,
                rate_limiter_config: d.limits.map(rate_limiter),
            })
            .collect(),
        serial: Some(serial),
        console: Some(ConsoleConfig {
            mode: ConsoleMode::Off,
            file: None,
            socket: None,
        }),
        vsock,
    })
}

/// The most memory a VM booted with `config` can be resized to.
fn memory_max(config: &api::VmConfig) -> Option<u64> {
    config
        .memory
        .hotplug_size
        .map(|extra| config.memory.size + extra)
}

/// Removes the vsock socket a snapshot's configuration names, if nothing
/// listens on it any more (a killed VM leaves it behind; Cloud Hypervisor
/// will not bind over it).
fn remove_stale_vsock_socket(snapshot: &Path) {
    let Ok(text) = std::fs::read_to_string(snapshot.join("config.json")) else {
        return;
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    if let Some(socket) = config["vsock"]["socket"].as_str()
        && std::os::unix::net::UnixStream::connect(socket).is_err()
    {
        let _ = std::fs::remove_file(socket);
    }
}

/// Per-second limits as token buckets refilled every 1000 ms.
fn rate_limiter(limits: IoLimits) -> RateLimiterConfig {
    let bucket = |per_sec: u64| TokenBucket {
        size: per_sec,
        one_time_burst: None,
        refill_time: 1000,
    };
    RateLimiterConfig {
        bandwidth: limits.bytes_per_sec.map(bucket),
        ops: limits.ops_per_sec.map(bucket),
    }
}

/// A VM in a Cloud Hypervisor process (killed when dropped), or in a VMM
/// someone else started ([`ChVm::attach`]).
#[derive(Debug)]
pub struct ChVm {
    child: Option<Child>,
    client: ChClient,
    console: Option<ChildStdout>,
    /// The resize bound in bytes (`None`: booted without hotplug memory).
    memory_max: Option<u64>,
}

impl ChVm {
    /// Creates and boots `config` in the VMM already listening on `socket`
    /// (started elsewhere, e.g. by a service manager). Killing or waiting
    /// for it then goes through the API (`vmm.shutdown`, `vm.info`).
    ///
    /// # Errors
    ///
    /// As [`ChClient::ping`], plus the `vm.create`/`vm.boot` errors.
    pub async fn attach(socket: SocketPath, config: &api::VmConfig) -> Result<Self, Error> {
        let client = ChClient::new(socket);
        client.ping().await?;
        client.create(config).await?;
        client.action(Endpoint::VmBoot).await?;
        Ok(Self {
            child: None,
            client,
            console: None,
            memory_max: memory_max(config),
        })
    }

    /// The API client, for calls this type does not wrap.
    pub fn client(&self) -> &ChClient {
        &self.client
    }
}

impl Vm for ChVm {
    async fn info(&mut self) -> Result<VmInfo, Error> {
        let info = self.client.info().await?;
        let state = match info.state {
            api::VmState::Created => VmState::Created,
            api::VmState::Running => VmState::Running,
            api::VmState::Paused => VmState::Paused,
            api::VmState::Shutdown => VmState::Shutdown,
            api::VmState::BreakPoint => VmState::Other("BreakPoint".into()),
        };
        Ok(VmInfo {
            state,
            hypervisor: BACKEND,
            hardware_virtualization: true,
            capabilities: CAPABILITIES,
        })
    }

    async fn pause(&mut self) -> Result<(), Error> {
        self.client.action(Endpoint::VmPause).await
    }

    async fn resume(&mut self) -> Result<(), Error> {
        self.client.action(Endpoint::VmResume).await
    }

    async fn snapshot(&mut self, dir: &Path, deadline: Duration) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::WorkDir {
            path: dir.to_owned(),
            source,
        })?;
        // Cloud Hypervisor snapshots only a paused VM, and refuses to pause
        // one that is paused already.
        if self.client.info().await?.state != api::VmState::Paused {
            self.pause().await?;
        }
        self.client.with_timeout(deadline).snapshot(dir).await
    }

    async fn resize_memory(&mut self, memory: MemorySize) -> Result<(), Error> {
        let Some(max) = self.memory_max else {
            return Err(Error::Unsupported {
                backend: BACKEND,
                feature: "memory resize of a VM booted without VmConfig::memory_max",
            });
        };
        if memory.mib() << 20 > max {
            return Err(Error::InvalidConfig(format!(
                "{memory} is more than the {} MiB the VM was booted to allow",
                max >> 20
            )));
        }
        self.client
            .resize(&VmResize {
                desired_vcpus: None,
                desired_ram: Some(memory.mib() << 20),
            })
            .await
    }

    fn take_console(&mut self) -> Option<Console> {
        self.console.take().map(|c| Box::pin(c) as Console)
    }

    async fn power_button(&mut self) -> Result<(), Error> {
        self.client.action(Endpoint::VmPowerButton).await
    }

    async fn wait(mut self, deadline: Duration) -> Result<VmExit, Error> {
        let started = Instant::now();
        let mut failures = 0;
        loop {
            let stopped = match &mut self.child {
                Some(child) => child.try_wait().map_err(Error::Io)?.is_some(),
                // Another process's VMM: the guest is done when it says so,
                // or when the VMM stops answering (not at one slow answer).
                None => match self.client.info().await {
                    Ok(info) => {
                        failures = 0;
                        info.state == api::VmState::Shutdown
                    }
                    Err(_) => {
                        failures += 1;
                        failures >= 3
                    }
                },
            };
            if stopped {
                break;
            }
            if started.elapsed() > deadline {
                let status = self.stop().await?;
                return Ok(VmExit {
                    status,
                    killed: true,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = match &mut self.child {
            Some(child) => Some(child.wait().await.map_err(Error::Io)?),
            None => None,
        };
        Ok(VmExit {
            status,
            killed: false,
        })
    }

    async fn kill(mut self) -> Result<(), Error> {
        self.stop().await.map(drop)
    }
}

impl ChVm {
    /// Ends the VMM: kills our process, or asks another's to exit.
    async fn stop(&mut self) -> Result<Option<std::process::ExitStatus>, Error> {
        match &mut self.child {
            Some(child) => {
                if let Some(status) = child.try_wait().map_err(Error::Io)? {
                    return Ok(Some(status));
                }
                child.kill().await.map_err(Error::Io)?;
                child.try_wait().map_err(Error::Io)
            }
            None => self
                .client
                .action(Endpoint::VmmShutdown)
                .await
                .map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cid, Disk, VmConfig};

    #[test]
    fn vm_config_maps_onto_the_api() {
        let mut vm = VmConfig::new("/k/vmlinux");
        vm.initrd = Some("/k/initrd".into());
        vm.cmdline = "console=ttyS0".into();
        vm.cpus = 2;
        vm.disks = vec![Disk {
            limits: Some(IoLimits {
                bytes_per_sec: Some(1 << 20),
                ops_per_sec: None,
            }),
            ..Disk::new("/d/root.ext4", true)
        }];
        vm.serial = Serial::File("/w/console.log".into());
        vm.vsock = Some(Cid::new(9).unwrap());
        vm.memory_max = Some(MemorySize::from_mib(512).unwrap());
        let api = api_config(&vm, Path::new("/w")).unwrap();
        assert_eq!((api.cpus.boot_vcpus, api.memory.size), (2, 256 << 20));
        assert_eq!(api.memory.hotplug_size, Some(256 << 20));
        assert_eq!(api.memory.hotplug_method.as_deref(), Some("VirtioMem"));
        assert_eq!(memory_max(&api), Some(512 << 20));
        vm.memory_max = Some(MemorySize::from_mib(300).unwrap());
        assert!(matches!(
            api_config(&vm, Path::new("/w")),
            Err(Error::InvalidConfig(_))
        ));
        vm.memory_max = None;
        assert_eq!(api.payload.initramfs.as_deref(), Some("/k/initrd"));
        let limiter = api.disks[0].rate_limiter_config.unwrap();
        assert_eq!(limiter.bandwidth.unwrap().size, 1 << 20);
        assert!(limiter.ops.is_none());
        assert_eq!(api.serial.unwrap().mode, ConsoleMode::File);
        assert_eq!(api.vsock.unwrap().socket, "/w/vsock.sock");

        vm.channel = Some(SocketPath::new("/w/c.sock").unwrap());
        assert!(matches!(
            api_config(&vm, Path::new("/w")),
            Err(Error::Unsupported { .. })
        ));
        vm.channel = None;
        vm.network = Network::User;
        assert!(matches!(
            api_config(&vm, Path::new("/w")),
            Err(Error::Unsupported { .. })
        ));
    }
}
