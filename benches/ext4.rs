//! `kiln-ext4` vs `umoci unpack` + `mkfs.ext4 -d`, with `gzip -dc` and
//! `pigz -dc` of the same layers as the floor, on the images
//! `scripts/test-images` builds (a debootstrap'd Debian, ~100k small
//! files). Peak memory of our conversion is measured in a child process
//! (this binary re-run with `KILN_BENCH_EXT4_CHILD`), under GNU time.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kiln_ext4::{Ext4Writer, Image, OciLayout, Options, Reference, Selector, convert};

/// Environment variable that turns this binary into a one-shot converter
/// (`LAYOUT TAG OUTPUT`), so its peak RSS can be measured alone.
const CHILD: &str = "KILN_BENCH_EXT4_CHILD";

fn images() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_TEST_IMAGES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-images"),
        PathBuf::from,
    );
    let layout = dir.join("layout");
    layout.join("index.json").exists().then_some(layout)
}

fn resolve(layout: &OciLayout, tag: &str) -> Image {
    let selector = Selector {
        reference: Some(Reference::Tag(tag.into())),
        ..Selector::default()
    };
    Image::resolve(layout, &selector).expect("resolve test image")
}

fn kiln_convert(layout_dir: &Path, tag: &str, out: &Path) -> kiln_ext4::Summary {
    let layout = OciLayout::open(layout_dir).expect("layout");
    let image = resolve(&layout, tag);
    let file = BufWriter::with_capacity(1 << 20, File::create(out).expect("output"));
    convert(&layout, &image, file, Options::default(), &mut |_| {})
        .expect("convert")
        .1
}

/// Child mode: convert once and exit.
pub(crate) fn child_main() -> bool {
    let Some(args) = std::env::var_os(CHILD) else {
        return false;
    };
    let args: Vec<String> = args
        .to_string_lossy()
        .split('\n')
        .map(String::from)
        .collect();
    kiln_convert(Path::new(&args[0]), &args[1], Path::new(&args[2]));
    true
}

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.stdout(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn best(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().unwrap_or_default()
}

/// Peak RSS in MiB of our conversion, alone in a child process.
fn kiln_peak_rss(layout: &Path, tag: &str, out: &Path) -> f64 {
    let exe = std::env::current_exe().expect("current exe");
    crate::test_utils::peak_rss_mib(
        Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(exe)
            .env(
                CHILD,
                format!("{}\n{tag}\n{}", layout.display(), out.display()),
            ),
    )
}

/// The peer: `umoci unpack` then `mkfs.ext4 -d`, sized from the unpacked
/// tree (`du` blocks plus inode tables, +10%; the sizing is not timed).
fn umoci_mkfs(layout: &Path, tag: &str, work: &Path) -> Duration {
    let bundle = work.join("bundle");
    let _ = std::fs::remove_dir_all(&bundle);
    let unpack = run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let du = Command::new("du")
        .args(["-s", "-B4096"])
        .arg(&rootfs)
        .output()
        .expect("du");
    let blocks: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("du output");
    let count = Command::new("sh")
        .arg("-c")
        .arg(format!("find {} | wc -l", rootfs.display()))
        .output()
        .expect("find");
    let inodes: u64 = String::from_utf8_lossy(&count.stdout)
        .trim()
        .parse()
        .expect("count");
    let size_blocks = (blocks + inodes * 256 / 4096) * 11 / 10 + 4096;
    let image = work.join("mkfs.ext4");
    let _ = std::fs::remove_file(&image);
    let mkfs = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-O", "^has_journal", "-N"])
        .arg((inodes * 11 / 10 + 1024).to_string())
        .arg("-d")
        .arg(&rootfs)
        .arg(&image)
        .arg(size_blocks.to_string()));
    std::fs::remove_dir_all(&bundle).expect("remove bundle");
    unpack + mkfs
}

/// `gzip -dc` / `pigz -dc` of every layer blob to /dev/null.
fn decompress_floor(layout_dir: &Path, image: &Image, tool: &str) -> Duration {
    let blobs: Vec<PathBuf> = image
        .layers()
        .iter()
        .map(|l| layout_dir.join("blobs/sha256").join(l.digest().digest()))
        .collect();
    run(Command::new(tool).arg("-dc").args(&blobs))
}

fn compare(layout_dir: &Path, tag: &str, work: &Path, target: f64) {
    let layout = OciLayout::open(layout_dir).expect("layout");
    let image = resolve(&layout, tag);
    let out = work.join("kiln.ext4");
    let kiln = best(3, || {
        let t = Instant::now();
        kiln_convert(layout_dir, tag, &out);
        t.elapsed()
    });
    let rss = kiln_peak_rss(layout_dir, tag, &out);
    let peer = best(2, || umoci_mkfs(layout_dir, tag, work));
    let gzip = best(3, || decompress_floor(layout_dir, &image, "gzip"));
    let pigz = best(3, || decompress_floor(layout_dir, &image, "pigz"));
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "{tag:>10}: kiln {:.3}s | umoci+mkfs {:.3}s = {:.1}x faster (target >= {}x) | gzip -dc {:.3}s, pigz -dc {:.3}s: kiln/pigz {:.2} (target <= 1.3) | kiln peak RSS {:.0} MiB (target <= 256) | image {} MB",
        secs(kiln),
        secs(peer),
        secs(peer) / secs(kiln),
        target,
        secs(gzip),
        secs(pigz),
        secs(kiln) / secs(pigz),
        rss,
        std::fs::metadata(&out)
            .map(|m| m.len() / 1_000_000)
            .unwrap_or(0),
    );
}

/// A synthetic layer of 2000 small files, converted in memory.
fn synthetic_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for i in 0..2000u32 {
        let data = vec![(i % 251) as u8; (i as usize * 37) % 9000];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut h, format!("dir{}/file{i}", i % 20), &data[..])
            .expect("tar");
    }
    builder.into_inner().expect("tar")
}

fn criterion_groups(c: &mut Criterion) {
    if !crate::test_utils::selected("ext4") {
        return;
    }
    let layer = synthetic_layer();
    let mut group = c.benchmark_group("ext4");
    group.throughput(Throughput::Bytes(layer.len() as u64));
    group.bench_function("2000 files in memory", |b| {
        b.iter(|| {
            let mut w = Ext4Writer::new(std::io::Cursor::new(Vec::new()), Options::default());
            w.add_layer(std::hint::black_box(&layer[..]))
                .expect("layer");
            w.finish().expect("finish")
        });
    });
    group.finish();

    let Some(layout) = images() else {
        println!("ext4 comparison skipped: run scripts/test-images target/test-images");
        return;
    };
    for tool in ["umoci", "mkfs.ext4", "pigz", "gzip", "/usr/bin/time"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            println!("ext4 comparison skipped: {tool} missing");
            return;
        }
    }
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-ext4");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    println!(
        "\n== ext4: kiln vs umoci unpack + mkfs.ext4 -d, same images, same run (best of 3; peer best of 2) =="
    );
    compare(&layout, "debian", &work, 2.5);
    compare(&layout, "many-files", &work, 6.0);
    println!();
    let _ = std::fs::remove_dir_all(&work);
}

criterion::criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = criterion_groups
}
