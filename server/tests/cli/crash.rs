//! Crash safety: `kiln serve` killed with SIGKILL at random moments while
//! clients push multi-layer images concurrently, restarted, and checked:
//! every manifest it acknowledged (201) is there byte for byte, every blob
//! those reference is whole and digest-valid, and nothing it serves is
//! partial. On the local disk and on the Garage cluster.

use std::time::{Duration, Instant};

use crate::client::sha256;
use crate::serve::{Kiln, SECRET, http, s3_config, tenant_config};

/// Rounds of kill and restart (on disk; half on S3), pushers per round,
/// and images one pusher pushes in a round at most (the test stays within
/// ~100 MB).
const ROUNDS: usize = 12;
const PUSHERS: usize = 8;
const IMAGES: usize = 6;

/// What the server acknowledged: a tag, its manifest bytes, its blobs.
#[derive(Clone)]
pub(crate) struct Acked {
    pub(crate) tag: String,
    pub(crate) manifest: Vec<u8>,
    pub(crate) blobs: Vec<String>,
}

/// A small deterministic generator (no dependency for a test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Pushes a blob monolithically (Basic auth); its digest, if acknowledged.
pub(crate) async fn push_blob(base: &str, data: Vec<u8>) -> Option<String> {
    let digest = sha256(&data);
    let r = http()
        .post(format!(
            "{base}/v2/acme/crash/blobs/uploads/?digest={digest}"
        ))
        .basic_auth("acme", Some(SECRET))
        .body(data)
        .send()
        .await
        .ok()?;
    (r.status() == 201).then_some(digest)
}

/// Pushes images until the server goes away; what it acknowledged.
pub(crate) async fn pusher(base: String, seed: u64, who: usize) -> Vec<Acked> {
    let mut rng = Rng(seed | 1);
    let mut acked = Vec::new();
    for n in 0..IMAGES {
        let mut layers = Vec::new();
        for _ in 0..3 {
            let size = 1024 + (rng.next() % (64 << 10)) as usize;
            let data = rng.bytes(size);
            let len = data.len();
            let Some(d) = push_blob(&base, data).await else {
                return acked;
            };
            layers.push((d, len));
        }
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":{}}}"#,
            rng.next()
        );
        let config_len = config.len();
        let Some(config_digest) = push_blob(&base, config.into_bytes()).await else {
            return acked;
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
            "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let tag = format!("p{who}-{seed:x}-{n}");
        let Ok(r) = http()
            .put(format!("{base}/v2/acme/crash/manifests/{tag}"))
            .basic_auth("acme", Some(SECRET))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
        else {
            return acked;
        };
        if r.status() != 201 {
            return acked;
        }
        let mut blobs: Vec<String> = layers.into_iter().map(|(d, _)| d).collect();
        blobs.push(config_digest);
        acked.push(Acked {
            tag,
            manifest,
            blobs,
        });
    }
    acked
}

/// Everything acknowledged is there, whole and digest-valid.
pub(crate) async fn verify(base: &str, acked: &[Acked]) {
    for a in acked {
        let r = http()
            .get(format!("{base}/v2/acme/crash/manifests/{}", a.tag))
            .basic_auth("acme", Some(SECRET))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged manifest {} lost", a.tag);
        assert!(
            r.bytes().await.unwrap()[..] == a.manifest[..],
            "manifest {} changed",
            a.tag
        );
        for d in &a.blobs {
            let r = http()
                .get(format!("{base}/v2/acme/crash/blobs/{d}"))
                .basic_auth("acme", Some(SECRET))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "blob {d} of {} lost", a.tag);
            assert_eq!(
                sha256(&r.bytes().await.unwrap()),
                *d,
                "blob {d} served partial or wrong"
            );
        }
    }
}

/// `rounds` kills, each after 0..`window_ms` (plus a little) of pushing.
fn crash_rounds(name: &str, config: &str, env: &[(String, String)], rounds: usize, window_ms: u64) {
    let dir = crate::ext4::scratch(name);
    let mut kiln = Kiln::start_with_env(&dir, config, env);
    let runtime = crate::peers::runtime();
    let mut all: Vec<Acked> = Vec::new();
    let started = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
    for round in 0..rounds {
        let base = kiln.url();
        seed = Rng(seed).next();
        let kill_after = Duration::from_millis(20 + seed % window_ms);
        let tasks: Vec<_> = (0..PUSHERS)
            .map(|p| runtime.spawn(pusher(base.clone(), seed.wrapping_add(p as u64 * 7919), p)))
            .collect();
        std::thread::sleep(kill_after);
        kiln = kiln.crash_and_restart(config, env);
        for t in tasks {
            all.extend(runtime.block_on(t).unwrap());
        }
        runtime.block_on(verify(&kiln.url(), &all));
        eprintln!(
            "{name}: round {round}: killed after {kill_after:?}, {} manifests acknowledged so far, all intact",
            all.len()
        );
    }
    assert!(
        !all.is_empty(),
        "nothing was acknowledged: the test proved nothing"
    );
    eprintln!("{name}: {rounds} kills in {:?}", started.elapsed());
}

#[test]
fn kill_9_during_concurrent_pushes_loses_nothing_acknowledged_on_disk() {
    crash_rounds("crash-disk", &tenant_config(""), &[], ROUNDS, 400);
}

#[test]
fn kill_9_during_concurrent_pushes_loses_nothing_acknowledged_on_s3() {
    let Some((config, env)) = s3_config("crash") else {
        return;
    };
    // Every object write is fsynced on three Garage nodes here: an image
    // takes a second or two, so the kills come later.
    crash_rounds("crash-s3", &config, &env, ROUNDS / 2, 3000);
}

/// Two replicas on one bucket, half the pushers on each; A is killed with
/// SIGKILL at a random moment of every round. B's pushers never notice:
/// all their images are acknowledged; everything either acknowledged is
/// intact, read through B while A is down and through A once it is back.
#[test]
fn a_replica_killed_while_the_other_serves_loses_nothing() {
    let Some((config, env)) = s3_config("replicas") else {
        return;
    };
    let dir = crate::ext4::scratch("crash-replicas");
    let (mut a, b) = Kiln::start_replicas(&dir, &config, &env);
    let runtime = crate::peers::runtime();
    let mut all: Vec<Acked> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(std::process::id());
    for round in 0..4 {
        seed = Rng(seed).next();
        let kill_after = Duration::from_millis(500 + seed % 2500);
        let on = |kiln: &Kiln, p: usize| {
            runtime.spawn(pusher(kiln.url(), seed.wrapping_add(p as u64 * 7919), p))
        };
        let on_a: Vec<_> = (0..PUSHERS / 2).map(|p| on(&a, p)).collect();
        let on_b: Vec<_> = (PUSHERS / 2..PUSHERS).map(|p| on(&b, p)).collect();
        std::thread::sleep(kill_after);
        a.kill();
        for t in on_a {
            all.extend(runtime.block_on(t).unwrap());
        }
        for t in on_b {
            let acked = runtime.block_on(t).unwrap();
            assert_eq!(
                acked.len(),
                IMAGES,
                "a push through B failed while A was down"
            );
            all.extend(acked);
        }
        runtime.block_on(verify(&b.url(), &all));
        a = a.crash_and_restart(&config, &env);
        runtime.block_on(verify(&a.url(), &all));
        eprintln!(
            "replicas: round {round}: A killed after {kill_after:?}; {} manifests acknowledged so far, all intact on both",
            all.len()
        );
    }
}

/// One of the three Garage nodes killed with SIGKILL while eight clients
/// push: with replication factor 3 the others hold a quorum, every push
/// is acknowledged, and everything is intact with the node down and after
/// it is back.
#[test]
fn one_garage_node_killed_mid_push_loses_nothing() {
    let Some((config, env)) = s3_config("garage-node") else {
        return;
    };
    let garage = std::path::PathBuf::from(
        std::env::var("KILN_TEST_GARAGE_DIR").expect("KILN_TEST_GARAGE_DIR with KILN_TEST_S3_*"),
    );
    let node = garage.join("node2");
    let pid = std::fs::read_to_string(node.join("pid")).unwrap();
    let dir = crate::ext4::scratch("crash-garage-node");
    let kiln = Kiln::start_with_env(&dir, &config, &env);
    let runtime = crate::peers::runtime();
    let tasks: Vec<_> = (0..PUSHERS)
        .map(|p| runtime.spawn(pusher(kiln.url(), 0x6a09_e667 + p as u64 * 2, p)))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success(), "killing Garage node 2 ({pid})");
    let mut all = Vec::new();
    for t in tasks {
        all.extend(runtime.block_on(t).unwrap());
    }
    // Started the way scripts/garage-cluster starts it (and stopped by
    // it at the end of the run).
    let restart = || {
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg("garage -c \"$0/garage.toml\" server >>\"$0/garage.log\" 2>&1 & echo $! >\"$0/pid\"")
            .arg(&node)
            .status()
            .expect("restart Garage node 2");
        assert!(status.success());
    };
    let acked = all.len();
    if acked != PUSHERS * IMAGES {
        restart();
        panic!(
            "{acked} of {} pushes acknowledged with one node down",
            PUSHERS * IMAGES
        );
    }
    runtime.block_on(verify(&kiln.url(), &all));
    restart();
    // Back in the cluster: a write and every read still go through.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let more = runtime.block_on(pusher(kiln.url(), 0x3c6e_f372, 99));
        if more.len() == IMAGES {
            all.extend(more);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pushes fail after node 2 is back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    runtime.block_on(verify(&kiln.url(), &all));
    eprintln!(
        "garage node: {} manifests acknowledged, all intact",
        all.len()
    );
}
