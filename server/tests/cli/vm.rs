//! `kiln vm run`: real QEMU guests booting images converted by kiln-ext4,
//! with `kiln-init` running the entrypoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::ext4::{layout_dir, scratch};

/// What a VM test needs: QEMU, a kernel, the static init, the test images.
struct Guest {
    kernel: PathBuf,
    init: PathBuf,
    layout: PathBuf,
}

fn guest() -> Option<Guest> {
    let kernel = std::env::var_os("KILN_TEST_KERNEL").map(PathBuf::from);
    let init = std::env::var_os("KILN_INIT").map(PathBuf::from);
    let layout = layout_dir();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok();
    match (kernel, init, qemu && layout.join("index.json").exists()) {
        (Some(kernel), Some(init), true) => Some(Guest {
            kernel,
            init,
            layout,
        }),
        _ => {
            let msg = "VM tests need qemu-system-x86_64, KILN_TEST_KERNEL, KILN_INIT and the \
                       ext4 test images (scripts/test provides all four)";
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
            None
        }
    }
}

impl Guest {
    /// `kiln vm run --kernel K --init I`, more arguments to follow.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["vm", "run", "--kernel"])
            .arg(&self.kernel)
            .arg("--init")
            .arg(&self.init);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run kiln")
    }

    fn image(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_entrypoint_runs_with_the_images_env_workdir_and_user_and_its_exit_code_returns() {
    let Some(g) = guest() else { return };
    let out = g.run(&["--image", &g.image("busybox")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        "hello from bar in /srv as 1000:1000",
        "{stderr}"
    );
}

#[test]
fn an_image_pulled_from_a_registry_boots_and_bad_references_fail_clearly() {
    let Some(g) = guest() else { return };
    if !(crate::peers::have("docker-registry") && crate::peers::have("htpasswd")) {
        return;
    }
    let dir = scratch("vm-docker");
    // A registry that wants credentials, as private registries do.
    let registry = crate::peers::htpasswd_registry(&dir.join("registry"));
    crate::peers::ok(crate::peers::skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "kiln:s3cret",
        &g.image("busybox"),
        &format!("docker://{}/team/busybox:1", registry.host),
    ]));
    let image = format!("docker://{}/team/busybox:1", registry.host);
    let out = g.run(&["--image", &image, "--insecure", "--creds", "kiln:s3cret"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        "hello from bar in /srv as 1000:1000",
        "{stderr}"
    );
    // Wrong credentials, a missing tag: the pull's error, no guest.
    for (image, creds) in [
        (image.as_str(), "kiln:wrong"),
        (
            &*format!("docker://{}/team/busybox:2", registry.host),
            "kiln:s3cret",
        ),
    ] {
        let out = g.run(&["--image", image, "--insecure", "--creds", creds]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{stdout}");
        assert!(stderr.contains("pulling"), "{stderr}");
    }
}

#[test]
fn a_command_override_runs_on_a_writable_overlay() {
    let Some(g) = guest() else { return };
    let script = "echo home=$HOME; echo data > /tmp/new && cat /tmp/new; exit 0";
    let out = g.run(&["--image", &g.image("busybox"), "--", script]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "home=/home/app\ndata", "{stderr}");
}

#[test]
fn machine_and_network_options_reach_the_guest() {
    let Some(g) = guest() else { return };
    let script = "cat /etc/resolv.conf; ls -1 /sys/class/net; \
        for d in /sys/bus/pci/devices/*; do [ -e \"$d\" ] && echo pci && break; done; true";
    let out = g.run(&[
        "--machine",
        "q35",
        "--network",
        "user",
        "--image",
        &g.image("busybox"),
        "--",
        script,
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // q35 has PCI devices (microvm has none).
    assert_eq!(
        stdout.trim(),
        "nameserver 10.0.2.3\neth0\nlo\npci",
        "{stderr}"
    );
}

#[test]
fn an_image_converted_by_kiln_ext4_boots_from_its_files() {
    let Some(g) = guest() else { return };
    let dir = scratch("vm-convert");
    let disk = dir.join("busybox.ext4");
    let convert = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["ext4", "convert", &g.image("busybox"), "-o"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        convert.status.success(),
        "{}",
        String::from_utf8_lossy(&convert.stderr)
    );
    let meta = dir.join("busybox.json");
    let out = g.run(&[
        "--ext4",
        disk.to_str().unwrap(),
        "--metadata",
        meta.to_str().unwrap(),
        "--",
        "uname -s; exit 42",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(42), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "Linux");
}

/// No QEMU process mentions `marker` on its command line.
fn no_qemu_left(marker: &str) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !(cmdline.contains("qemu-system") && cmdline.contains(marker)),
            "orphaned QEMU: {cmdline}"
        );
    }
}

#[test]
fn a_disk_that_is_not_ext4_fails_clearly_and_leaves_no_qemu() {
    let Some(g) = guest() else { return };
    let dir = scratch("vm-bad-disk");
    let disk = dir.join("garbage.img");
    std::fs::write(&disk, vec![0x5a; 1 << 20]).unwrap();
    let meta = dir.join("meta.json");
    std::fs::write(&meta, r#"{"image":"","platform":"linux/amd64","entrypoint":["/bin/true"],"cmd":[],"env":[],"working_dir":"","user":"","exposed_ports":[],"labels":{},"stop_signal":null}"#).unwrap();
    let out = g.run(&[
        "--ext4",
        disk.to_str().unwrap(),
        "--metadata",
        meta.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the guest failed: mount ext4 on /lower"),
        "{stderr}"
    );
    no_qemu_left(disk.to_str().unwrap());
}

#[test]
fn an_init_that_cannot_run_is_a_clear_error_not_a_hang() {
    let Some(g) = guest() else { return };
    // A text file as /init: the kernel cannot execute it and panics.
    let bogus = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["vm", "run", "--timeout", "120", "--kernel"])
        .arg(&g.kernel)
        .arg("--init")
        .arg(&bogus)
        .args(["--image", &g.image("busybox")])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped without reporting an exit status"),
        "{stderr}"
    );
    assert!(stderr.contains("Kernel panic"), "{stderr}");
}

#[test]
fn four_vms_run_at_once() {
    let Some(g) = guest() else { return };
    let children: Vec<_> = (0..4)
        .map(|i| {
            g.command()
                .args([
                    "--image",
                    &g.image("busybox"),
                    "--",
                    &format!("echo vm {i}; exit {}", 10 + i),
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(10 + i as i32), "{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), format!("vm {i}"));
    }
}

#[test]
fn output_streams_while_the_workload_runs() {
    use std::io::{BufRead, BufReader};
    let Some(g) = guest() else { return };
    let mut child = g
        .command()
        .args(["--accel", "tcg"])
        .args([
            "--image",
            &g.image("busybox"),
            "--",
            "echo first; sleep 10; echo second",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    // The guest is still sleeping: the first line came before the exit.
    assert!(
        child.try_wait().unwrap().is_none(),
        "output arrived only at exit"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(lines.next().is_none());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
