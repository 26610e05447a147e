//! Garbage collection in `kiln serve` and by hand: the online collector
//! running every second while clients push and delete, then `kiln gc` and
//! `kiln scrub` over the server's store.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::client::sha256;
use crate::crash::{Acked, pusher, verify};
use crate::serve::{Kiln, SECRET, http, metric, tenant_config};

const GC: &str = "[gc]\ninterval_secs = 1\ngrace_secs = 3\nwrite_deadline_secs = 1\nuntagged_retention_secs = 3\nupload_ttl_secs = 60\n";

async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.basic_auth("acme", Some(SECRET))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn kiln(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(dir)
        .args(args)
        .args(["--config", "kiln.toml"])
        .output()
        .unwrap()
}

#[test]
fn the_online_collector_runs_while_clients_push_and_delete_then_kiln_gc_and_scrub_agree() {
    let dir = crate::ext4::scratch("gc-online");
    let config = tenant_config(GC);
    let server = Kiln::start(&dir, &config, &[]);
    let base = server.url();
    let runtime = crate::peers::runtime();
    let mut kept: Vec<Acked> = Vec::new();
    let mut deleted: Vec<Acked> = Vec::new();
    let started = Instant::now();
    // Bounded: five rounds of four concurrent pushers (each up to six
    // images of three layers ≤ 65 KiB), half of each round deleted.
    for round in 0..5u64 {
        let tasks: Vec<_> = (0..4u64)
            .map(|p| {
                runtime.spawn(pusher(
                    base.clone(),
                    0x5eed + (round * 4 + p) * 2,
                    p as usize,
                ))
            })
            .collect();
        for t in tasks {
            for (i, a) in runtime.block_on(t).unwrap().into_iter().enumerate() {
                if i % 2 == 0 {
                    let digest = sha256(&a.manifest);
                    let url = format!("{base}/v2/acme/crash/manifests/{digest}");
                    let r = runtime
                        .block_on(http().delete(url).basic_auth("acme", Some(SECRET)).send())
                        .unwrap();
                    let code = r.status().as_u16();
                    assert_eq!(code, 202, "{}", runtime.block_on(r.text()).unwrap());
                    deleted.push(a);
                } else {
                    kept.push(a);
                }
            }
        }
    }
    assert!(
        kept.len() >= 20 && deleted.len() >= 20,
        "{} kept, {} deleted",
        kept.len(),
        deleted.len()
    );
    eprintln!(
        "gc: pushed {} images in {:?}",
        kept.len() + deleted.len(),
        started.elapsed()
    );

    // Past the grace, a run removes every blob of the deleted images.
    let runs_before = runtime.block_on(metric(&base, "kiln_gc_runs_total"));
    let gone = |a: &Acked| {
        a.blobs.iter().all(|d| {
            let url = format!("{base}/v2/acme/crash/blobs/{d}");
            runtime.block_on(status(http().head(url))) == 404
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !deleted.iter().all(gone) {
        assert!(
            Instant::now() < deadline,
            "deleted images' blobs still there after 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let runs = runtime.block_on(metric(&base, "kiln_gc_runs_total"));
    assert!(runs > runs_before || runs >= 2, "{runs} runs");
    assert!(
        runtime.block_on(metric(&base, "kiln_gc_blobs_deleted_total")) >= deleted.len() as u64 * 4
    );
    assert_eq!(runtime.block_on(metric(&base, "kiln_gc_failures_total")), 0);
    runtime.block_on(verify(&base, &kept));
    // Their conversions' records go with them (these images do not run:
    // their conversions failed, records all the same); the kept stay.
    let image = |a: &Acked| {
        let url = format!("{base}/kiln/v1/images/{}", sha256(&a.manifest));
        runtime.block_on(status(http().get(url)))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while deleted.iter().any(|a| image(a) != 404) {
        assert!(
            Instant::now() < deadline,
            "conversion records of deleted images remain"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(kept.iter().all(|a| image(a) == 200));
    assert!(
        runtime.block_on(metric(&base, "kiln_gc_conversions_pruned_total")) >= deleted.len() as u64
    );
    drop(server);

    // By hand, on the stopped server's store: nothing left to remove.
    let out = kiln(&dir, &["gc", "--dry-run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["blobs_deleted"], 0, "{report}");
    assert_eq!(report["blobs"], report["blobs_referenced"], "{report}");
    assert_eq!(report["manifests"], kept.len(), "{report}");
    let out = kiln(&dir, &["gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 removed"));

    // Conversions of manifests deleted while no collector ran are pruned by
    // `kiln gc` as well (the dry run above prunes nothing).
    let idle = tenant_config(&GC.replace("interval_secs = 1\n", "interval_secs = 3600\n"));
    let server = Kiln::start(&dir, &idle, &[]);
    let base = server.url();
    for a in &kept[1..3] {
        let url = format!("{base}/v2/acme/crash/manifests/{}", sha256(&a.manifest));
        assert_eq!(runtime.block_on(status(http().delete(url))), 202);
    }
    drop(server);
    let out = kiln(&dir, &["gc", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["conversions_pruned"], 2, "{report}");
    let server = Kiln::start(&dir, &idle, &[]);
    let base = server.url();
    let image = |a: &Acked| {
        let url = format!("{base}/kiln/v1/images/{}", sha256(&a.manifest));
        runtime.block_on(status(http().get(url)))
    };
    assert_eq!((image(&kept[1]), image(&kept[2])), (404, 404));
    assert!(kept[3..].iter().chain(&kept[..1]).all(|a| image(a) == 200));
    drop(server);
    let kept: Vec<Acked> = kept[..1].iter().chain(&kept[3..]).cloned().collect();

    let out = kiln(&dir, &["scrub"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 corrupt, 0 broken"), "{text}");
    // A flipped byte is found, and named.
    let victim = &kept[0].blobs[0];
    let hex = victim.trim_start_matches("sha256:");
    let path = dir.join(format!(
        "kiln-data/registry/blobs/sha256/{}/{hex}",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let out = kiln(&dir, &["scrub"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("corrupt blob {victim}")), "{text}");

    // Bad arguments fail clearly.
    let out = kiln(&dir, &["gc", "--grace", "1s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("grace period"));
}
