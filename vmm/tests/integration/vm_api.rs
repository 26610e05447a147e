//! The backend-neutral API ([`Hypervisor`], [`VmConfig`], [`Vm`]) on the
//! real QEMU backend: a microvm boots a busybox initramfs with its console
//! as a stream and a rate-limited disk (QEMU's own `query-block` shows the
//! limits), pauses, snapshots into a directory, restores in a new process
//! where it goes on, and a guest that ignores the power button is killed at
//! the deadline. What the backend cannot do is a typed refusal.

use std::time::Duration;

use kiln_vmm::{
    Accel, Cid, Disk, Error, Hypervisor, IoLimits, Machine, Qemu, Serial, Vm, VmConfig, VmState,
    host_tsc_khz,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::qemu::{busybox_initramfs, dir, qemu_available, runtime, test_kernel};

#[test]
fn a_vm_config_boots_streams_its_console_snapshots_restores_and_is_killed_at_the_deadline() {
    if !qemu_available() {
        return;
    }
    let Some(kernel) = test_kernel() else { return };
    let d = dir("api");
    // No power-button handler in this guest: only the deadline stops it.
    // Ticks forever (a restored guest must go on ticking); no power-button
    // handler: only the deadline stops it.
    let Some(initrd) = busybox_initramfs(
        &d,
        "/bin/busybox echo KILN-API-UP\nwhile true; do /bin/busybox echo tick; /bin/busybox sleep 0.2; done\n",
    ) else {
        return;
    };
    let data = d.join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let mut config = VmConfig::new(kernel);
    config.initrd = Some(initrd);
    let mut qemu = Qemu::new(Accel::Tcg);
    config.cmdline = "console=ttyS0 quiet panic=-1 no_timer_check".into();
    match host_tsc_khz() {
        Some(khz) => config.cmdline.push_str(&format!(" tsc_early_khz={khz}")),
        None => qemu.machine = Machine::Q35,
    }
    config.serial = Serial::Stream;
    config.disks = vec![Disk {
        limits: Some(IoLimits {
            bytes_per_sec: Some(4 << 20),
            ops_per_sec: Some(200),
        }),
        ..Disk::new(&data, false)
    }];
    assert_eq!(qemu.name(), "qemu");
    runtime().block_on(async {
        let mut vm = qemu.start(&config, &d.join("one")).await.unwrap();
        let console = vm.take_console().expect("a console stream");
        assert!(vm.take_console().is_none(), "the stream is handed out once");
        let mut lines = BufReader::new(console).lines();
        let up = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("KILN-API-UP") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(up, Ok(true), "the guest's marker never came");

        let info = vm.info().await.unwrap();
        assert_eq!(info.state, VmState::Running);
        assert!(!info.hardware_virtualization && info.capabilities.disk_io_limits);
        let block = vm.qmp().execute("query-block", None).await.unwrap();
        let inserted = &block[0]["inserted"];
        assert_eq!(inserted["bps"], 4 << 20, "{block}");
        assert_eq!(inserted["iops"], 200, "{block}");

        // Optional operations QEMU lacks are typed refusals.
        let resize = vm.resize_memory("512M".parse().unwrap()).await;
        assert!(
            matches!(resize, Err(Error::Unsupported { .. })),
            "{resize:?}"
        );

        vm.pause().await.unwrap();
        assert_eq!(vm.info().await.unwrap().state, VmState::Paused);
        vm.resume().await.unwrap();
        let snapshot = d.join("snapshot");
        vm.snapshot(&snapshot, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(vm.info().await.unwrap().state, VmState::Paused);
        vm.kill().await.unwrap();

        // A new QEMU continues the guest from the snapshot directory.
        let mut restored = qemu
            .restore(&config, &d.join("two"), &snapshot, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(restored.info().await.unwrap().state, VmState::Running);
        // It goes on where it was: ticking (no second boot, no marker).
        let mut lines = BufReader::new(restored.take_console().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the restored guest prints")
            .unwrap();
        assert_eq!(first.as_deref().map(str::trim), Some("tick"));
        // The guest ignores the power button: killed at the deadline.
        restored.power_button().await.unwrap();
        let exit = restored.wait(Duration::from_secs(3)).await.unwrap();
        assert!(exit.killed, "{exit:?}");
    });

    // vsock needs /dev/vhost-vsock: without it, a clear refusal up front.
    if !qemu.capabilities().vsock {
        config.vsock = Some(Cid::new(5).unwrap());
        let err = runtime()
            .block_on(qemu.start(&config, &d.join("three")))
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    }
    std::fs::remove_dir_all(&d).ok();
}
