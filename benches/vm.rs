//! `kiln_vmm::run` vs a bare, hand-written QEMU command line booting the
//! same kernel, the same initramfs (with `kiln-init`) and the same ext4
//! disk (the busybox test image converted by kiln-ext4): time from start to
//! the workload's first output line and to QEMU's exit, and QEMU's peak RSS
//! (GNU time around QEMU in both cases). Needs `KILN_TEST_KERNEL`,
//! `KILN_INIT` and the ext4 test images (`scripts/test` provides them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use kiln_ext4::{Image, OciLayout, Options, Reference, Selector, convert};
use kiln_vmm::{
    Accel, GUEST_MODULES, GuestKernel, InitConfig, Machine, MemorySize, Network, RunSpec,
    host_tsc_khz, initramfs, run,
};

const MARKER: &str = "kiln-bench-marker";
const CMDLINE: &str = "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check \
    cryptomgr.notests init_on_alloc=0 random.trust_cpu=on 8250.nr_uarts=1 rdinit=/init";

struct Inputs {
    kernel: GuestKernel,
    init: PathBuf,
    disk: PathBuf,
    work: PathBuf,
}

fn inputs() -> Option<Inputs> {
    let kernel = PathBuf::from(std::env::var_os("KILN_TEST_KERNEL")?);
    let init = PathBuf::from(std::env::var_os("KILN_INIT")?);
    let layout_dir = std::env::var_os("KILN_TEST_IMAGES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-images"),
        PathBuf::from,
    );
    let layout = OciLayout::open(layout_dir.join("layout")).ok()?;
    let work = std::env::temp_dir().join(format!("kbvm-{}", std::process::id()));
    std::fs::create_dir_all(&work).ok()?;
    let selector = Selector {
        reference: Some(Reference::Tag("busybox".into())),
        ..Selector::default()
    };
    let image = Image::resolve(&layout, &selector).ok()?;
    let disk = work.join("busybox.ext4");
    let file = std::fs::File::create(&disk).ok()?;
    convert(&layout, &image, file, Options::default(), &mut |_| {}).ok()?;
    Some(Inputs {
        kernel: GuestKernel::from_image(kernel).ok()?,
        init,
        disk,
        work,
    })
}

fn workload() -> InitConfig {
    InitConfig {
        argv: vec!["/bin/sh".into(), "-c".into(), format!("echo {MARKER}")],
        env: vec!["PATH=/bin".into()],
        ..InitConfig::default()
    }
}

/// A QEMU wrapper that records its peak RSS (KiB) in `out`.
fn rss_wrapper(dir: &Path, out: &Path) -> PathBuf {
    let script = dir.join("qemu-rss.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec /usr/bin/time -f %M -o {} qemu-system-x86_64 \"$@\"\n",
            out.display()
        ),
    )
    .expect("wrapper");
    let _ = Command::new("chmod").arg("+x").arg(&script).status();
    script
}

fn rss_mib(file: &Path) -> f64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One kiln run: (to first output line, to exit, QEMU peak RSS MiB).
fn kiln_once(
    inputs: &Inputs,
    runtime: &tokio::runtime::Runtime,
    machine: Machine,
    i: usize,
) -> (Duration, Duration, f64) {
    let work = inputs.work.join(format!("kiln-{i}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work");
    let rss = work.join("rss");
    let spec = RunSpec {
        qemu: rss_wrapper(&work, &rss),
        kernel: inputs.kernel.clone(),
        init: inputs.init.clone(),
        disk: inputs.disk.clone(),
        workload: workload(),
        memory: MemorySize::from_mib(256).expect("memory"),
        cpus: 1,
        machine,
        network: Network::None,
        accel: Accel::Tcg,
        work_dir: work.join("vm"),
        timeout: Duration::from_secs(120),
    };
    let console = work.join("vm/console.log");
    let start = Instant::now();
    let watcher = std::thread::spawn(move || {
        loop {
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            if text.contains(MARKER) {
                return start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(120) {
                return Duration::MAX;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let outcome = runtime.block_on(run(&spec)).expect("kiln run");
    let total = start.elapsed();
    assert!(outcome.console.contains(MARKER), "{}", outcome.console);
    let first = watcher.join().expect("watcher");
    (first, total, rss_mib(&rss))
}

/// One bare QEMU run with the same kernel, initramfs and disk (and on
/// microvm the same `tsc_early_khz`).
fn bare_once(
    inputs: &Inputs,
    initrd: &Path,
    machine: Machine,
    i: usize,
) -> (Duration, Duration, f64) {
    let rss = inputs.work.join(format!("bare-rss-{i}"));
    let (machine, block, cmdline, kernel) = match machine {
        Machine::Q35 => (
            "q35",
            "virtio-blk-pci",
            CMDLINE.to_owned(),
            inputs.kernel.image.clone(),
        ),
        // The same kernel form kiln boots there: the PVH vmlinux.
        _ => (
            "microvm",
            "virtio-blk-device",
            format!(
                "{CMDLINE} tsc_early_khz={}",
                host_tsc_khz().expect("TSC frequency")
            ),
            inputs
                .kernel
                .pvh_image(&std::env::temp_dir().join("kiln-kernels"))
                .unwrap_or_else(|_| inputs.kernel.image.clone()),
        ),
    };
    let start = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .args([
            "qemu-system-x86_64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-machine",
            machine,
            "-accel",
            "tcg",
            "-m",
            "256M",
            "-smp",
            "1",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &cmdline])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=d0,format=raw,readonly=on",
            inputs.disk.display()
        ))
        .args(["-device", &format!("{block},drive=d0")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu");
    let mut first = Duration::MAX;
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        if line.map(|l| l.contains(MARKER)).unwrap_or(false) && first == Duration::MAX {
            first = start.elapsed();
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "bare QEMU failed");
    (first, start.elapsed(), rss_mib(&rss))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn criterion_groups(_c: &mut Criterion) {
    if !crate::test_utils::selected("vm") {
        return;
    }
    let Some(inputs) = inputs() else {
        println!(
            "vm benchmark skipped: needs KILN_TEST_KERNEL, KILN_INIT and the ext4 test images"
        );
        return;
    };
    let modules = inputs
        .kernel
        .module_closure(GUEST_MODULES)
        .expect("modules");
    let mut config = workload();
    config.root_device = "/dev/vda".into();
    let initrd = inputs.work.join("bare-initramfs.cpio");
    std::fs::write(
        &initrd,
        initramfs(&inputs.init, &modules, &config).expect("initramfs"),
    )
    .expect("write");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    const RUNS: usize = 7;
    for (machine, name) in [(Machine::Microvm, "microvm"), (Machine::Q35, "q35")] {
        let (mut kf, mut kt, mut kr, mut bf, mut bt, mut br) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for i in 0..RUNS {
            // Interleaved so drift affects both alike.
            let (f, t, r) = kiln_once(&inputs, &runtime, machine, i);
            kf.push(f.as_secs_f64());
            kt.push(t.as_secs_f64());
            kr.push(r);
            let (f, t, r) = bare_once(&inputs, &initrd, machine, i);
            bf.push(f.as_secs_f64());
            bt.push(t.as_secs_f64());
            br.push(r);
        }
        let (kf, kt, kr, bf, bt, br) = (
            median(kf),
            median(kt),
            median(kr),
            median(bf),
            median(bt),
            median(br),
        );
        println!(
            "\n== vm: kiln_vmm::run vs bare QEMU, {name} TCG, same kernel/initramfs/disk, median of {RUNS} =="
        );
        println!(
            "first output line: kiln {kf:.3}s bare {bf:.3}s overhead {:+.1}% (target <= 10%) | exit: kiln {kt:.3}s bare {bt:.3}s overhead {:+.1}% | QEMU peak RSS: kiln {kr:.0} MiB bare {br:.0} MiB overhead {:+.1} MiB (target <= 10 MiB)\n",
            (kf / bf - 1.0) * 100.0,
            (kt / bt - 1.0) * 100.0,
            kr - br,
        );
    }
    let _ = std::fs::remove_dir_all(&inputs.work);
}

criterion::criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = criterion_groups
}
