//! The guest side: module resolution against the real Debian kernel, and a
//! whole run (initramfs with `kiln-init`, an ext4 made by `mkfs.ext4 -d`,
//! exit status from the console report, or a virtio-serial channel).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kiln_vmm::{
    Accel, GUEST_MODULES, GuestKernel, InitConfig, Machine, MemorySize, Network, RunSpec, Vm,
    VmState, accel_canary, run,
};

use crate::qemu::{dir, qemu_available, runtime, test_kernel};

#[test]
fn modules_resolve_with_dependencies_first() {
    let Some(kernel) = test_kernel() else { return };
    let kernel = GuestKernel::from_image(kernel).unwrap();
    let modules = kernel.module_closure(GUEST_MODULES).unwrap();
    let names: Vec<String> = modules
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let at = |n: &str| {
        names
            .iter()
            .position(|m| m == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    assert!(at("virtio.ko") < at("virtio_blk.ko"));
    assert!(at("virtio_ring.ko") < at("virtio_blk.ko"));
    assert!(at("virtio.ko") < at("virtio_console.ko"));
    at("overlay.ko");
    // Each module once.
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    assert!(matches!(
        kernel.module_closure(&["no_such_module"]),
        Err(kiln_vmm::Error::MissingModule { .. })
    ));
}

pub(crate) fn init_binary() -> Option<PathBuf> {
    match std::env::var_os("KILN_INIT").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        _ => {
            let msg = "KILN_INIT not set (scripts/test builds the static kiln-init)";
            assert!(std::env::var_os("CI").is_none(), "{msg}: required in CI");
            eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
            None
        }
    }
}

/// What a workload test needs: the kernel, the static init, and a small
/// ext4 disk (made by `mkfs.ext4 -d`) holding busybox with `applets`.
/// `None` (after a loud note; a failure in CI) when something is missing.
fn busybox_guest(d: &std::path::Path, applets: &[&str], argv: &str) -> Option<RunSpec> {
    if !qemu_available() {
        return None;
    }
    let (kernel, init) = (test_kernel()?, init_binary()?);
    let Ok(busybox) = std::env::var("KILN_TEST_BUSYBOX") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "KILN_TEST_BUSYBOX required in CI"
        );
        return None;
    };
    let root = d.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let disk = d.join("disk.ext4");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-d"])
        .arg(&root)
        .arg(&disk)
        .arg("16M")
        .status()
        .unwrap();
    assert!(mkfs.success());
    Some(RunSpec {
        qemu: "qemu-system-x86_64".into(),
        kernel: GuestKernel::from_image(kernel).unwrap(),
        init,
        disk,
        workload: InitConfig {
            argv: vec!["/bin/sh".into(), "-c".into(), argv.into()],
            env: vec!["PATH=/bin".into()],
            ..InitConfig::default()
        },
        memory: MemorySize::from_mib(256).unwrap(),
        cpus: 1,
        machine: Machine::Microvm,
        network: Network::None,
        accel: Accel::Tcg,
        work_dir: d.join("vm"),
        timeout: Duration::from_secs(120),
    })
}

#[test]
fn a_workload_runs_from_an_ext4_disk_and_reports_its_exit_status() {
    let d = dir("run");
    let Some(mut spec) = busybox_guest(&d, &["sh"], "echo from-guest $GREETING; exit 7") else {
        return;
    };
    spec.workload.env.push("GREETING=hi".into());
    let outcome = runtime().block_on(run(&spec)).unwrap();
    assert_eq!(outcome.exit_code, 7, "{}", outcome.console);
    assert_eq!(outcome.console.trim(), "from-guest hi");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_kvm_canary_picks_an_accelerator_that_boots() {
    if !qemu_available() {
        return;
    }
    let (Some(kernel), Some(init)) = (test_kernel(), init_binary()) else {
        return;
    };
    let kernel = GuestKernel::from_image(kernel).unwrap();
    let d = dir("canary");
    let start = std::time::Instant::now();
    let (accel, why) = runtime().block_on(accel_canary(
        &kernel,
        &init,
        &d.join("vm"),
        Duration::from_secs(15),
    ));
    eprintln!("canary chose {accel:?} in {:?}: {why}", start.elapsed());
    // Whatever it chose must boot the guest.
    let spec = RunSpec {
        qemu: "qemu-system-x86_64".into(),
        kernel,
        init,
        disk: d.join("vm/canary.img"),
        workload: InitConfig::default(),
        memory: MemorySize::from_mib(128).unwrap(),
        cpus: 1,
        machine: Machine::Microvm,
        network: Network::None,
        accel,
        work_dir: d.join("check"),
        timeout: Duration::from_secs(120),
    };
    match runtime().block_on(run(&spec)) {
        Err(kiln_vmm::Error::Guest { message, .. }) => {
            assert!(message.contains("nothing to run"), "{message}")
        }
        other => panic!("the chosen accelerator did not boot the guest: {other:?}"),
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_running_workload_pauses_resumes_and_continues_after_snapshot_and_restore() {
    let d = dir("snap");
    let Some(spec) = busybox_guest(
        &d,
        &["sh", "sleep"],
        "echo before; sleep 3; echo after; exit 5",
    ) else {
        return;
    };
    let console = d.join("vm/console.log");
    let snapshot = d.join("guest.state");
    runtime().block_on(async {
        let mut guest = kiln_vmm::GuestVm::start(&spec).await.unwrap();
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains("before")
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the workload never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let info = guest.info().await.unwrap();
        assert_eq!(info.state, VmState::Running);
        assert_eq!(info.hypervisor, "qemu");
        assert!(info.capabilities.snapshot && !info.hardware_virtualization);
        guest.qemu().pause().await.unwrap();
        assert_eq!(guest.qemu().status().await.unwrap(), "paused");
        guest.qemu().resume().await.unwrap();
        assert_eq!(guest.qemu().status().await.unwrap(), "running");
        guest
            .snapshot(&snapshot, Duration::from_secs(60))
            .await
            .unwrap();
        guest.quit(Duration::from_secs(10)).await.unwrap();

        // A new QEMU continues the same guest from the snapshot: the
        // workload finishes its sleep, prints and exits with its code.
        let restored = kiln_vmm::GuestVm::restore(&spec, &snapshot).await.unwrap();
        let outcome = restored.finish(Duration::from_secs(120)).await.unwrap();
        assert_eq!(outcome.exit_code, 5, "{}", outcome.console);
        assert!(outcome.console.contains("after"), "{}", outcome.console);
        assert!(
            !outcome.console.contains("before"),
            "the restored guest did not rerun the workload"
        );
    });
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn graceful_shutdown_sends_the_stop_signal_and_returns_its_status() {
    let d = dir("shutdown");
    let Some(mut spec) = busybox_guest(&d, &["sh", "sleep"], "echo up; exec sleep 600") else {
        return;
    };
    // The image's stop signal, not the default SIGTERM.
    spec.workload.stop_signal = "SIGINT".into();
    let console = d.join("vm/console.log");
    runtime().block_on(async {
        let guest = kiln_vmm::GuestVm::start(&spec).await.unwrap();
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains("up")
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the workload never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = std::time::Instant::now();
        let outcome = guest.shutdown(Duration::from_secs(30)).await.unwrap();
        // SIGINT (2): the image's stop signal, not the default SIGTERM.
        assert_eq!(outcome.exit_code, 128 + 2, "{}", outcome.console);
        assert!(t.elapsed() < Duration::from_secs(30));
    });
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn user_mode_network_reaches_a_server_on_the_host_loopback() {
    use std::io::{BufRead, BufReader, Write};
    let d = dir("net");
    let Some(mut spec) = busybox_guest(&d, &["sh", "wget", "cat"], "") else {
        return;
    };
    // A one-shot HTTP server on the host's loopback; the guest reaches it
    // through QEMU's NAT as 10.0.2.2.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let (conn, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("no connection from the guest: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut request = String::new();
        reader.read_line(&mut request).unwrap();
        let body = "hello from the host loopback\n";
        write!(
            &conn,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        (request, peer)
    });
    spec.network = Network::User;
    spec.workload.argv[2] =
        format!("wget -q -O - http://10.0.2.2:{port}/kiln && cat /etc/resolv.conf");
    let outcome = runtime().block_on(run(&spec)).unwrap();
    assert_eq!(outcome.exit_code, 0, "{}", outcome.console);
    assert!(
        outcome.console.contains("hello from the host loopback"),
        "{}",
        outcome.console
    );
    assert!(
        outcome.console.contains("nameserver 10.0.2.3"),
        "{}",
        outcome.console
    );
    let (request, _) = server.join().unwrap();
    assert!(request.starts_with("GET /kiln "), "{request}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_test_kernel_yields_a_pvh_vmlinux_once() {
    let Some(kernel) = test_kernel() else { return };
    let kernel = GuestKernel::from_image(kernel).unwrap();
    let d = dir("pvh");
    let vmlinux = kernel.pvh_image(&d).unwrap();
    let elf = std::fs::read(&vmlinux).unwrap();
    assert!(elf.starts_with(b"\x7fELF\x02\x01"));
    let bzimage = std::fs::metadata(&kernel.image).unwrap().len();
    assert!(elf.len() as u64 > 2 * bzimage, "{} vs {bzimage}", elf.len());
    // Cached: the same file, not written again.
    let modified = std::fs::metadata(&vmlinux).unwrap().modified().unwrap();
    assert_eq!(kernel.pvh_image(&d).unwrap(), vmlinux);
    assert_eq!(
        std::fs::metadata(&vmlinux).unwrap().modified().unwrap(),
        modified
    );
    // `file` (libmagic), an independent reader, agrees.
    let out = Command::new("file").arg(&vmlinux).output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("ELF 64-bit LSB executable"), "{text}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_workload_cannot_learn_or_forge_the_report_and_leftovers_end_with_it() {
    let d = dir("forge");
    // As a user: look for the secret where it was, print a forged report,
    // and leave a process behind that ignores SIGTERM/SIGHUP and keeps
    // writing to the console.
    let Some(mut spec) = busybox_guest(
        &d,
        &["sh", "sleep", "cat", "printf"],
        "cat /kiln/init.json /proc/1/root/kiln/init.json /proc/2/root/kiln/init.json /proc/1/environ; \
         printf '\\000KILN-REPORT 00000000000000000000000000000000 exit=0\\n'; \
         (trap '' TERM HUP; while :; do echo tick; done) & sleep 1; exit 7",
    ) else {
        return;
    };
    spec.workload.user = "1000:1000".into();
    let outcome = runtime().block_on(run(&spec)).unwrap();
    assert_eq!(outcome.exit_code, 7, "{}", outcome.console);
    let nonce = std::fs::read_to_string(d.join("vm/report.nonce")).unwrap();
    assert!(!outcome.console.contains(&nonce), "{}", outcome.console);
    assert!(
        outcome.console.contains("KILN-REPORT 0000"),
        "the forged report is plain output: {}",
        outcome.console
    );
    // The ticking process was ended: kiln-init's report is the last thing
    // on the raw console.
    let raw = std::fs::read(d.join("vm/console.log")).unwrap();
    let report = kiln_init::report_line(&nonce, "exit=7");
    assert!(
        raw.ends_with(report.as_bytes()),
        "{}",
        String::from_utf8_lossy(&raw[raw.len().saturating_sub(200)..])
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn kiln_init_reports_on_a_virtio_serial_channel_when_one_is_configured() {
    use kiln_vmm::{CHANNEL_NAME, Disk, Hypervisor, Qemu, Serial, SocketPath, Vm, VmConfig};
    use tokio::io::AsyncReadExt;
    let d = dir("channel");
    let Some(spec) = busybox_guest(&d, &["sh"], "echo via the channel; exit 9") else {
        return;
    };
    // The backend-neutral API with the channel `GuestVm` no longer uses:
    // kiln-init reports there instead of on the console.
    let modules = spec.kernel.module_closure(GUEST_MODULES).unwrap();
    let mut init = spec.workload.clone();
    init.root_device = "/dev/vda".into();
    init.channel = CHANNEL_NAME.into();
    let initrd = d.join("initramfs.cpio");
    std::fs::write(
        &initrd,
        kiln_vmm::initramfs(&spec.init, &modules, &init).unwrap(),
    )
    .unwrap();
    let channel = SocketPath::new(d.join("ch.sock")).unwrap();
    let mut config = VmConfig::new(&spec.kernel.image);
    config.initrd = Some(initrd);
    config.cmdline = "console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init".into();
    config.disks = vec![Disk::new(&spec.disk, true)];
    config.serial = Serial::File(d.join("console.log"));
    config.channel = Some(channel.clone());
    let mut qemu = Qemu::new(Accel::Tcg);
    qemu.machine = Machine::Q35;
    let report = runtime().block_on(async {
        let vm = qemu.start(&config, &d.join("vm")).await.unwrap();
        let mut stream = tokio::net::UnixStream::connect(channel.as_path())
            .await
            .unwrap();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(120), stream.read_to_string(&mut text))
            .await
            .expect("the guest reports within the deadline")
            .unwrap();
        let exit = vm.wait(Duration::from_secs(30)).await.unwrap();
        assert!(!exit.killed, "{exit:?}");
        text
    });
    assert_eq!(report.trim(), "exit=9");
    let console = std::fs::read_to_string(d.join("console.log")).unwrap();
    assert!(console.contains("via the channel"), "{console}");
    assert!(!console.contains("KILN-REPORT"), "{console}");
    std::fs::remove_dir_all(&d).ok();
}
