//! QEMU's lifecycle over QMP, with a real `qemu-system-x86_64` (no guest
//! kernel needed: vCPUs start paused and only QMP is exercised).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kiln_vmm::{Error, Machine, QemuConfig, QemuVm, Serial, SocketPath, Vm};

pub(crate) fn qemu_available() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v qemu-system-x86_64"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let msg = "qemu-system-x86_64 not installed (scripts/test installs qemu-system-x86)";
        assert!(std::env::var("CI").is_err(), "{msg}: required in CI");
        eprintln!("\n\n!!!!! SKIPPING: {msg} !!!!!\n\n");
    }
    found
}

pub(crate) fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pause_resume_and_quit_over_qmp() {
    if !qemu_available() {
        return;
    }
    let d = dir("life");
    let mut cfg = QemuConfig::new(SocketPath::new(d.join("qmp.sock")).unwrap());
    cfg.machine = Machine::Q35;
    cfg.memory = "64M".parse().unwrap();
    cfg.start_paused = true;
    cfg.log = Some(d.join("qemu.log"));
    runtime().block_on(async {
        let mut vm = QemuVm::start(&cfg).await.unwrap();
        assert_eq!(vm.status().await.unwrap(), "prelaunch");
        vm.resume().await.unwrap();
        vm.qmp()
            .wait_event("RESUME", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(vm.status().await.unwrap(), "running");
        vm.pause().await.unwrap();
        vm.qmp()
            .wait_event("STOP", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(vm.status().await.unwrap(), "paused");
        vm.resume().await.unwrap();
        assert_eq!(vm.status().await.unwrap(), "running");
        // QEMU's own errors come back typed.
        let err = vm.qmp().execute("no-such-command", None).await.unwrap_err();
        assert!(matches!(err, Error::Command { .. }), "{err}");
        let status = vm.quit(Duration::from_secs(10)).await.unwrap();
        assert!(status.success(), "{status}");
    });
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_vm_that_cannot_start_is_a_clear_error_and_no_orphan() {
    if !qemu_available() {
        return;
    }
    let d = dir("bad");
    let mut cfg = QemuConfig::new(SocketPath::new(d.join("qmp.sock")).unwrap());
    cfg.kernel = Some(d.join("missing-kernel"));
    cfg.log = Some(d.join("qemu.log"));
    let err = runtime().block_on(QemuVm::start(&cfg)).unwrap_err();
    match err {
        Error::Exited { stderr, .. } => assert!(stderr.contains("missing-kernel"), "{stderr}"),
        other => panic!("expected an early exit, got {other}"),
    }
    // Dropping a running VM kills its QEMU.
    let mut cfg = QemuConfig::new(SocketPath::new(d.join("qmp2.sock")).unwrap());
    cfg.machine = Machine::Q35;
    cfg.memory = "64M".parse().unwrap();
    cfg.start_paused = true;
    let rt = runtime();
    let pid_file = d.join("pid");
    cfg.extra_args = vec!["-pidfile".into(), pid_file.display().to_string()];
    let vm = rt.block_on(QemuVm::start(&cfg)).unwrap();
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    drop(vm);
    let mut gone = false;
    for _ in 0..200 {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its (dropped) parent handle.
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(gone, "QEMU {pid} still running after drop");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn snapshot_then_restore_continues() {
    if !qemu_available() {
        return;
    }
    let d = dir("snap");
    let base = |sock: &str| {
        let mut cfg = QemuConfig::new(SocketPath::new(d.join(sock)).unwrap());
        cfg.machine = Machine::Q35;
        cfg.memory = "64M".parse().unwrap();
        cfg.log = Some(d.join(format!("{sock}.log")));
        cfg
    };
    let state = d.join("state.bin");
    runtime().block_on(async {
        let mut vm = QemuVm::start(&base("one.sock")).await.unwrap();
        assert_eq!(vm.status().await.unwrap(), "running");
        vm.migrate_to_file(&state, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(vm.status().await.unwrap(), "postmigrate");
        assert!(vm.quit(Duration::from_secs(10)).await.unwrap().success());
        assert!(std::fs::metadata(&state).unwrap().len() > 0);

        let mut cfg = base("two.sock");
        cfg.incoming = Some(state.clone());
        let mut restored = QemuVm::start(&cfg).await.unwrap();
        restored
            .wait_restored(Duration::from_secs(30))
            .await
            .unwrap();
        restored.resume().await.unwrap();
        assert_eq!(restored.status().await.unwrap(), "running");
        assert!(
            restored
                .quit(Duration::from_secs(10))
                .await
                .unwrap()
                .success()
        );

        // A snapshot that does not load: QEMU's own reason, not a closed
        // socket.
        let junk = d.join("junk.bin");
        std::fs::write(&junk, b"not a QEMU migration stream").unwrap();
        let mut cfg = base("junk.sock");
        cfg.incoming = Some(junk);
        // (QEMU may fail before or after its QMP socket answers.)
        let outcome = match QemuVm::start(&cfg).await {
            Ok(mut bad) => bad.wait_restored(Duration::from_secs(30)).await,
            Err(e) => Err(e),
        };
        match outcome {
            Err(Error::Exited { stderr, .. }) => assert!(stderr.contains("migration"), "{stderr}"),
            other => panic!("expected QEMU's exit with its message, got {other:?}"),
        }
        // A restore path /bin/sh would reinterpret is refused up front.
        let mut cfg = base("four.sock");
        cfg.incoming = Some(d.join("a;b"));
        assert!(matches!(
            QemuVm::start(&cfg).await,
            Err(Error::InvalidSnapshotPath(_))
        ));

        let mut vm = QemuVm::start(&base("three.sock")).await.unwrap();
        let bad = vm
            .migrate_to_file(&d.join("a b"), Duration::from_secs(5))
            .await;
        assert!(matches!(bad, Err(Error::InvalidSnapshotPath(_))), "{bad:?}");
        vm.quit(Duration::from_secs(10)).await.unwrap();
    });
    std::fs::remove_dir_all(&d).ok();
}

/// The Debian cloud kernel `scripts/test` unpacks (`$KILN_TEST_KERNEL`).
pub(crate) fn test_kernel() -> Option<PathBuf> {
    match std::env::var_os("KILN_TEST_KERNEL").map(PathBuf::from) {
        Some(k) if k.is_file() => Some(k),
        _ => {
            let msg = "KILN_TEST_KERNEL not set to a kernel (scripts/test unpacks one)";
            assert!(std::env::var("CI").is_err(), "{msg}: required in CI");
            eprintln!("\n\n!!!!! SKIPPING: {msg} !!!!!\n\n");
            None
        }
    }
}

/// Boots `kernel` (and `initrd`) on q35 under `-no-reboot`, waits for QEMU
/// to exit by itself, asserts it exited 0 and returns the serial console.
fn boot_to_exit(
    d: &std::path::Path,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    args: &str,
) -> String {
    let serial = d.join("serial.log");
    let mut cfg = QemuConfig::new(SocketPath::new(d.join("qmp.sock")).unwrap());
    cfg.machine = Machine::Q35;
    cfg.kernel = Some(kernel);
    cfg.initrd = initrd;
    cfg.cmdline = Some(format!("{args} no_timer_check cryptomgr.notests"));
    cfg.serial = Serial::File(serial.clone());
    cfg.log = Some(d.join("qemu.log"));
    cfg.extra_args = vec!["-no-reboot".into()];
    let status = runtime()
        .block_on(async {
            let vm = QemuVm::start(&cfg).await?;
            vm.wait(Duration::from_secs(120)).await
        })
        .unwrap();
    assert!(!status.killed, "QEMU did not exit by itself");
    let status = status.status.unwrap();
    assert!(status.success(), "{status}");
    String::from_utf8_lossy(&std::fs::read(&serial).unwrap()).into_owned()
}

#[test]
fn a_real_kernel_boots_and_its_console_is_captured() {
    if !qemu_available() {
        return;
    }
    let Some(kernel) = test_kernel() else { return };
    let d = dir("kernel");
    // No root file system yet: the kernel boots, panics, and with
    // `panic=-1` QEMU exits.
    let console = boot_to_exit(&d, kernel, None, "console=ttyS0 panic=-1");
    assert!(console.contains("Linux version"), "{console}");
    assert!(
        console.contains("Kernel panic - not syncing: VFS: Unable to mount root fs"),
        "{console}"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// An initramfs (written with our cpio writer) holding busybox and an
/// `/init` shell script running `script`; `None` (loudly; a failure in
/// CI) without `$KILN_TEST_BUSYBOX`.
pub(crate) fn busybox_initramfs(d: &std::path::Path, script: &str) -> Option<PathBuf> {
    let busybox = match std::env::var_os("KILN_TEST_BUSYBOX").map(PathBuf::from) {
        Some(b) if b.is_file() => b,
        _ => {
            let msg = "KILN_TEST_BUSYBOX not set (scripts/test unpacks busybox-static)";
            assert!(std::env::var("CI").is_err(), "{msg}: required in CI");
            eprintln!("\n\n!!!!! SKIPPING: {msg} !!!!!\n\n");
            return None;
        }
    };
    let initrd = d.join("initrd.cpio");
    let mut cpio = kiln_vmm::CpioWriter::new(std::fs::File::create(&initrd).unwrap());
    cpio.dir("bin", 0o755).unwrap();
    cpio.dir("dev", 0o755).unwrap();
    cpio.char_device("dev/console", 0o600, 5, 1).unwrap();
    cpio.file("bin/busybox", 0o755, &std::fs::read(&busybox).unwrap())
        .unwrap();
    cpio.symlink("bin/sh", "busybox").unwrap();
    cpio.file("init", 0o755, format!("#!/bin/sh\n{script}").as_bytes())
        .unwrap();
    cpio.finish().unwrap();
    Some(initrd)
}

#[test]
fn an_initramfs_from_our_cpio_writer_boots_and_powers_off() {
    if !qemu_available() {
        return;
    }
    let Some(kernel) = test_kernel() else { return };
    let d = dir("initramfs");
    let Some(initrd) = busybox_initramfs(
        &d,
        "/bin/busybox echo KILN-INITRAMFS-OK \"$(/bin/busybox uname -r)\"\n/bin/busybox poweroff -f\n",
    ) else {
        return;
    };
    // The Debian cpio tool reads our archive back.
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -it < {}", initrd.display()))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout).into_owned();
    for name in ["bin/busybox", "bin/sh", "dev/console", "init"] {
        assert!(
            names.lines().any(|l| l == name),
            "{name} missing from {names}"
        );
    }

    let console = boot_to_exit(&d, kernel, Some(initrd), "console=ttyS0 quiet panic=-1");
    assert!(console.contains("KILN-INITRAMFS-OK 6."), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
    std::fs::remove_dir_all(&d).ok();
}
