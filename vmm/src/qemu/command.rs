//! QEMU's command line: machine, accelerator, devices.

use std::path::PathBuf;

use crate::{Cid, Disk, MemorySize, Network, Serial, SocketPath, VmConfig};

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
    /// Where the serial console goes (a stream is QEMU's stdout).
    pub serial: Serial,
    /// Where QEMU's own stderr goes (read back when it fails to start).
    pub log: Option<PathBuf>,
    /// Start with vCPUs stopped (`-S`): resume to run.
    pub start_paused: bool,
    /// Restore from a snapshot file written by
    /// [`QemuVm::migrate_to_file`](crate::QemuVm::migrate_to_file): QEMU
    /// loads it and waits paused; [`Vm::resume`](crate::Vm::resume) continues
    /// the guest.
    /// The rest of the configuration must be the snapshotted VM's.
    pub incoming: Option<PathBuf>,
    /// Block devices, in order.
    pub disks: Vec<Disk>,
    /// The host↔guest channel: a unix socket QEMU listens on, connected to
    /// the guest's virtio-serial port [`CHANNEL_NAME`].
    pub channel: Option<SocketPath>,
    /// The network (user-mode NAT is QEMU's slirp).
    pub network: Network,
    /// A vhost-vsock device with this context id (needs the host's
    /// `/dev/vhost-vsock`).
    pub vsock: Option<Cid>,
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
            serial: Serial::None,
            log: None,
            start_paused: false,
            incoming: None,
            disks: Vec::new(),
            channel: None,
            network: Network::None,
            vsock: None,
            extra_args: Vec::new(),
        }
    }

    /// The QEMU configuration booting `vm` on `machine` with `accel`,
    /// controlled over `qmp`.
    pub fn for_vm(vm: &VmConfig, machine: Machine, accel: Accel, qmp: SocketPath) -> Self {
        let mut cfg = Self::new(qmp);
        cfg.machine = machine;
        cfg.accel = accel;
        cfg.memory = vm.memory;
        cfg.cpus = vm.cpus;
        cfg.kernel = Some(vm.kernel.clone());
        cfg.initrd.clone_from(&vm.initrd);
        cfg.cmdline = Some(vm.cmdline.clone()).filter(|c| !c.is_empty());
        cfg.serial = vm.serial.clone();
        cfg.disks.clone_from(&vm.disks);
        cfg.channel.clone_from(&vm.channel);
        cfg.network = vm.network;
        cfg.vsock = vm.vsock;
        cfg
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
        let serial = match &self.serial {
            Serial::None => "none".to_owned(),
            Serial::File(p) => format!("file:{}", p.display()),
            Serial::Stream => "stdio".to_owned(),
        };
        a.extend(["-serial".into(), serial]);
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
        let bus = |device: &str| match self.machine {
            Machine::Microvm => format!("{device}-device"),
            Machine::Q35 => format!("{device}-pci"),
        };
        for (i, disk) in self.disks.iter().enumerate() {
            // QEMU option values escape a comma by doubling it.
            let file = disk.path.display().to_string().replace(',', ",,");
            let ro = if disk.read_only { ",readonly=on" } else { "" };
            let mut limits = String::new();
            if let Some(l) = disk.limits {
                if let Some(b) = l.bytes_per_sec {
                    limits.push_str(&format!(",throttling.bps-total={b}"));
                }
                if let Some(o) = l.ops_per_sec {
                    limits.push_str(&format!(",throttling.iops-total={o}"));
                }
            }
            a.extend([
                "-drive".into(),
                format!("file={file},if=none,id=disk{i},format=raw{ro}{limits}"),
                "-device".into(),
                format!("{},drive=disk{i}", bus("virtio-blk")),
            ]);
        }
        if let Some(channel) = &self.channel {
            a.extend([
                "-chardev".into(),
                format!("socket,id=kiln0,path={channel},server=on,wait=off"),
                "-device".into(),
                // Two ports (0 is reserved for a console): the default 31
                // costs the guest's driver ~3 MiB of buffers for nothing.
                format!("{},id=vs0,max_ports=2", bus("virtio-serial")),
                "-device".into(),
                format!("virtserialport,bus=vs0.0,chardev=kiln0,name={CHANNEL_NAME}"),
            ]);
        }
        if self.network == Network::User {
            a.extend([
                "-netdev".into(),
                "user,id=net0".into(),
                "-device".into(),
                format!("{},netdev=net0", bus("virtio-net")),
            ]);
        }
        if let Some(cid) = self.vsock {
            a.extend([
                "-device".into(),
                format!("{},guest-cid={cid}", bus("vhost-vsock")),
            ]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IoLimits;

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

    #[test]
    fn devices_follow_the_machine_bus() {
        let mut vm = VmConfig::new("/k/bzImage");
        vm.disks = vec![Disk {
            limits: Some(IoLimits {
                bytes_per_sec: Some(1 << 20),
                ops_per_sec: Some(100),
            }),
            ..Disk::new("/d/a,b.ext4", true)
        }];
        vm.network = Network::User;
        vm.vsock = Some(Cid::new(7).unwrap());
        vm.serial = Serial::Stream;
        vm.channel = Some(SocketPath::new("/tmp/c.sock").unwrap());
        let qmp = SocketPath::new("/tmp/q.sock").unwrap();
        let micro = QemuConfig::for_vm(&vm, Machine::Microvm, Accel::Tcg, qmp.clone()).args();
        let joined = micro.join(" ");
        assert!(joined.contains(
            "file=/d/a,,b.ext4,if=none,id=disk0,format=raw,readonly=on,throttling.bps-total=1048576,throttling.iops-total=100"
        ));
        assert!(joined.contains("-device virtio-blk-device,drive=disk0"));
        assert!(joined.contains("-netdev user,id=net0 -device virtio-net-device,netdev=net0"));
        assert!(joined.contains("-device vhost-vsock-device,guest-cid=7"));
        assert!(joined.contains("-serial stdio"));
        assert!(joined.contains("-device virtio-serial-device,id=vs0,max_ports=2"));
        assert!(!joined.contains("-append"), "an empty cmdline is left out");
        let q35 = QemuConfig::for_vm(&vm, Machine::Q35, Accel::Kvm, qmp)
            .args()
            .join(" ");
        for device in [
            "virtio-blk-pci",
            "virtio-net-pci",
            "vhost-vsock-pci",
            "virtio-serial-pci",
        ] {
            assert!(q35.contains(device), "{device}");
        }
        assert!(q35.contains("-machine q35 -accel kvm"));
    }
}
