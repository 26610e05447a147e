//! `kiln-dockerfile` vs the `dockerfile-parser` crate (0.9) on the real
//! Dockerfile corpus, and BuildKit's own Go parser (through the PyPI
//! `dockerfile` package, when installed) on the same files.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use kiln_dockerfile::{Dockerfile, ResolveOptions};

use crate::test_utils::{best_time, mb_per_s, shared_dir};

/// BuildKit's Go parser measured on this machine class (15 MB/s); the
/// target is ten times that.
const TARGET_MB_S: f64 = 150.0;

struct Corpus {
    files: Vec<(PathBuf, String)>,
    bytes: usize,
}

fn corpus() -> Corpus {
    let dir = shared_dir().join("corpus/dockerfile/real");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("corpus dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n != "SOURCES.md" && n != "manifest.tsv")
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                files.push((p, text));
            }
        }
    }
    files.sort();
    let bytes = files.iter().map(|(_, t)| t.len()).sum();
    Corpus { files, bytes }
}

fn parse_kiln(c: &Corpus) -> usize {
    c.files
        .iter()
        .filter(|(_, t)| black_box(Dockerfile::parse(black_box(t))).is_ok())
        .count()
}

fn images_kiln(c: &Corpus) -> usize {
    let opts = ResolveOptions::new();
    c.files
        .iter()
        .filter_map(|(_, t)| Dockerfile::parse(black_box(t)).ok())
        .filter(|d| black_box(d.images(&opts)).is_ok())
        .count()
}

fn parse_peer(c: &Corpus) -> usize {
    c.files
        .iter()
        .filter(|(_, t)| black_box(dockerfile_parser::Dockerfile::parse(black_box(t))).is_ok())
        .count()
}

fn criterion_groups(c: &mut Criterion) {
    if !crate::test_utils::selected("dockerfile") {
        return;
    }
    let corpus = corpus();
    let mut g = c.benchmark_group("dockerfile/real-corpus");
    g.throughput(Throughput::Bytes(corpus.bytes as u64));
    g.bench_function("kiln-dockerfile parse", |b| b.iter(|| parse_kiln(&corpus)));
    g.bench_function("kiln-dockerfile parse+images", |b| {
        b.iter(|| images_kiln(&corpus))
    });
    g.bench_function("dockerfile-parser 0.9 parse", |b| {
        b.iter(|| parse_peer(&corpus))
    });
    g.finish();
    summary(&corpus);
}

/// Times BuildKit's Go parser through the PyPI `dockerfile` package in a
/// Python process: best of several passes over the same files, per pass.
fn buildkit_via_pypi(c: &Corpus) -> Option<Duration> {
    let list = std::env::temp_dir().join(format!("kiln-bench-{}.list", std::process::id()));
    let names: String = c
        .files
        .iter()
        .map(|(p, _)| format!("{}\n", p.display()))
        .collect();
    std::fs::write(&list, names).ok()?;
    let script = r#"
import sys, time, dockerfile
texts = [open(p, encoding='utf-8').read() for p in open(sys.argv[1]).read().split('\n') if p]
best = float('inf')
for _ in range(7):
    t = time.perf_counter()
    for s in texts:
        try:
            dockerfile.parse_string(s)
        except Exception:
            pass
    best = min(best, time.perf_counter() - t)
print(best)
"#;
    // KILN_PYTHON: the oracle's interpreter (scripts/test's target/oracle-venv);
    // -I keeps a folder named `dockerfile` in the working directory out of it.
    let out = Command::new(std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-I", "-c", script])
        .arg(&list)
        .output()
        .ok()?;
    std::fs::remove_file(&list).ok();
    if !out.status.success() {
        return None;
    }
    let secs: f64 = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

fn summary(c: &Corpus) {
    let budget = Duration::from_secs(3);
    let kiln = best_time(budget, || {
        black_box(parse_kiln(c));
    });
    let kiln_images = best_time(budget, || {
        black_box(images_kiln(c));
    });
    let peer = best_time(budget, || {
        black_box(parse_peer(c));
    });
    let (ok_kiln, ok_peer) = (parse_kiln(c), parse_peer(c));
    let kiln_mb = mb_per_s(c.bytes, kiln);
    println!();
    println!(
        "== dockerfile: real corpus, {} files, {:.2} MB, single thread, best pass ==",
        c.files.len(),
        c.bytes as f64 / 1e6
    );
    println!(
        "kiln-dockerfile parse          {:>9.1} MB/s  ({ok_kiln} files parsed)",
        kiln_mb
    );
    println!(
        "kiln-dockerfile parse+images   {:>9.1} MB/s",
        mb_per_s(c.bytes, kiln_images)
    );
    println!(
        "dockerfile-parser 0.9 parse    {:>9.1} MB/s  ({ok_peer} files parsed)",
        mb_per_s(c.bytes, peer)
    );
    println!(
        "ratio kiln / dockerfile-parser {:>9.1}x   (target >= 8x)",
        peer.as_secs_f64() / kiln.as_secs_f64()
    );
    println!(
        "ratio kiln / BuildKit Go 15 MB/s (measured for this machine class) {:.1}x   (target >= 10x, i.e. >= {TARGET_MB_S} MB/s)",
        kiln_mb / 15.0
    );
    match buildkit_via_pypi(c) {
        Some(t) => println!(
            "BuildKit parser via PyPI `dockerfile` {:>6.1} MB/s  (Go parser + Python call overhead); ratio kiln / it {:.1}x",
            mb_per_s(c.bytes, t),
            t.as_secs_f64() / kiln.as_secs_f64()
        ),
        None => println!(
            "BuildKit parser via PyPI `dockerfile`: not available (set KILN_PYTHON to a Python with `dockerfile==3.4.0`, e.g. target/oracle-venv/bin/python from scripts/test)"
        ),
    }
    println!();
}

criterion::criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = criterion_groups
}
