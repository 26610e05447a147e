//! The Cloud Hypervisor client against the API's own OpenAPI document
//! (`../shared/docs/cloud-hypervisor/cloud-hypervisor.yaml`): every request
//! body validates against its schema, responses built from the schemas
//! decode, and a fake API server that checks each request against the
//! document drives the whole lifecycle. The real lifecycle test runs when a
//! `cloud-hypervisor` binary and usable KVM are present.

use std::path::PathBuf;

use kiln_vmm::cloud_hypervisor::{
    ChClient, ConsoleConfig, ConsoleMode, CpusConfig, DiskConfig, Endpoint, MemoryConfig,
    PayloadConfig, RateLimiterConfig, RestoreConfig, TokenBucket, VmConfig, VmInfo, VmResize,
    VmSnapshotConfig, VmState, VmmPingResponse, VsockConfig, decode_response,
};
use kiln_vmm::{Error, SocketPath};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::qemu::{dir, runtime};

fn spec() -> Option<Value> {
    let shared = std::env::var_os("KILN_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    let path = shared.join("docs/cloud-hypervisor/cloud-hypervisor.yaml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_yaml::from_str(&text).expect("the API document is YAML")),
        Err(e) => {
            let msg = format!("{}: {e}", path.display());
            assert!(
                std::env::var_os("CI").is_none(),
                "API document missing in CI: {msg}"
            );
            eprintln!("\n!!!!! SKIPPING: API document missing: {msg} !!!!!\n");
            None
        }
    }
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `value` against `schema`: types, enums, minimums, required
/// properties, and no property the document does not define.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    assert!(!schema.is_null(), "unknown schema at {at}");
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(value) {
            errors.push(format!("{at}: {value} not in {choices:?}"));
        }
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") | None if value.is_object() => {
            let object = value.as_object().unwrap();
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !object.contains_key(required.as_str().unwrap()) {
                    errors.push(format!("{at}: missing required {required}"));
                }
            }
            for (key, v) in object {
                let at = format!("{at}.{key}");
                match schema.get("properties").and_then(|p| p.get(key)) {
                    Some(s) => validate(spec, s, v, &at, errors),
                    None => match schema.get("additionalProperties") {
                        Some(s) if s.is_object() => validate(spec, s, v, &at, errors),
                        _ => errors.push(format!("{at}: not in the schema")),
                    },
                }
            }
        }
        Some("array") if value.is_array() => {
            for (i, item) in value.as_array().unwrap().iter().enumerate() {
                validate(spec, &schema["items"], item, &format!("{at}[{i}]"), errors);
            }
        }
        Some("string") if value.is_string() => {}
        Some("boolean") if value.is_boolean() => {}
        Some("integer") if value.is_i64() || value.is_u64() => {
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64)
                && value.as_i64().is_some_and(|v| v < min)
            {
                errors.push(format!("{at}: {value} below minimum {min}"));
            }
        }
        other => errors.push(format!("{at}: {value} is not of type {other:?}")),
    }
}

/// A value with every property the schema defines (enums take `pick`).
fn example(spec: &Value, schema: &Value, pick: usize, depth: usize) -> Value {
    let schema = resolve(spec, schema);
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        return choices[pick % choices.len()].clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => json!("text"),
        Some("integer") => json!(
            schema
                .get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .max(1)
        ),
        Some("boolean") => json!(true),
        Some("number") => json!(1.5),
        Some("array") if depth < 6 => json!([example(spec, &schema["items"], pick, depth + 1)]),
        Some("array") => json!([]),
        _ => {
            let mut object = serde_json::Map::new();
            if depth < 6 {
                for (key, s) in schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    object.insert(key.clone(), example(spec, s, pick, depth + 1));
                }
            }
            Value::Object(object)
        }
    }
}

/// The schema name of `endpoint`'s request body, if it has one.
fn request_schema(spec: &Value, endpoint: Endpoint) -> Option<String> {
    let op = &spec["paths"][endpoint.path()][endpoint.method().to_lowercase()];
    assert!(
        op.is_object(),
        "{} {} is not in the API document",
        endpoint.method(),
        endpoint.path()
    );
    op.get("requestBody").map(|b| {
        b["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    })
}

fn sample_config() -> VmConfig {
    VmConfig {
        cpus: CpusConfig {
            boot_vcpus: 1,
            max_vcpus: 2,
        },
        memory: MemoryConfig {
            size: 256 << 20,
            hotplug_size: Some(256 << 20),
            hotplug_method: Some("VirtioMem".into()),
        },
        payload: PayloadConfig {
            kernel: Some("/boot/vmlinux".into()),
            cmdline: Some("console=hvc0".into()),
            initramfs: Some("/tmp/initramfs.cpio".into()),
            firmware: None,
        },
        disks: vec![DiskConfig {
            path: "/images/rootfs.ext4".into(),
            readonly: true,
            rate_limiter_config: Some(RateLimiterConfig {
                bandwidth: Some(TokenBucket {
                    size: 10 << 20,
                    one_time_burst: Some(1 << 20),
                    refill_time: 1000,
                }),
                ops: None,
            }),
        }],
        serial: Some(ConsoleConfig {
            mode: ConsoleMode::File,
            file: Some("/tmp/serial.log".into()),
            socket: None,
        }),
        console: Some(ConsoleConfig {
            mode: ConsoleMode::Off,
            file: None,
            socket: None,
        }),
        vsock: Some(VsockConfig {
            cid: 3,
            socket: "/tmp/vsock.sock".into(),
        }),
    }
}

/// Our body for each endpoint that takes one.
fn bodies() -> Vec<(Endpoint, Value)> {
    vec![
        (
            Endpoint::VmCreate,
            serde_json::to_value(sample_config()).unwrap(),
        ),
        (
            Endpoint::VmSnapshot,
            serde_json::to_value(VmSnapshotConfig {
                destination_url: "file:///tmp/snap".into(),
            })
            .unwrap(),
        ),
        (
            Endpoint::VmRestore,
            serde_json::to_value(RestoreConfig {
                source_url: "file:///tmp/snap".into(),
                prefault: Some(true),
            })
            .unwrap(),
        ),
        (
            Endpoint::VmResize,
            serde_json::to_value(VmResize {
                desired_vcpus: Some(2),
                desired_ram: Some(512 << 20),
            })
            .unwrap(),
        ),
    ]
}

#[test]
fn every_endpoint_is_in_the_document_with_our_method_and_body() {
    let Some(spec) = spec() else { return };
    let with_body: Vec<Endpoint> = bodies().into_iter().map(|(e, _)| e).collect();
    for endpoint in Endpoint::ALL {
        let schema = request_schema(&spec, endpoint);
        assert_eq!(
            schema.is_some(),
            with_body.contains(&endpoint),
            "{endpoint:?} body"
        );
    }
    let expected = [
        (Endpoint::VmCreate, "VmConfig"),
        (Endpoint::VmSnapshot, "VmSnapshotConfig"),
        (Endpoint::VmRestore, "RestoreConfig"),
        (Endpoint::VmResize, "VmResize"),
    ];
    for (endpoint, name) in expected {
        assert_eq!(request_schema(&spec, endpoint).as_deref(), Some(name));
    }
}

#[test]
fn request_bodies_validate_against_their_schemas() {
    let Some(spec) = spec() else { return };
    for (endpoint, body) in bodies() {
        let name = request_schema(&spec, endpoint).unwrap();
        let mut errors = Vec::new();
        validate(
            &spec,
            &spec["components"]["schemas"][&name],
            &body,
            &name,
            &mut errors,
        );
        assert!(errors.is_empty(), "{endpoint:?}: {errors:#?}");
    }
    // The validator itself rejects what the document forbids.
    let mut errors = Vec::new();
    let bad = json!({"cpus": {"boot_vcpus": 0, "max_vcpus": 1}, "memory": {}, "bogus": 1});
    validate(
        &spec,
        &spec["components"]["schemas"]["VmConfig"],
        &bad,
        "VmConfig",
        &mut errors,
    );
    assert_eq!(errors.len(), 4, "{errors:#?}"); // payload, boot_vcpus, memory.size, bogus
}

#[test]
fn responses_built_from_the_schemas_decode() {
    let Some(spec) = spec() else { return };
    let schemas = &spec["components"]["schemas"];
    let ping: VmmPingResponse =
        serde_json::from_value(example(&spec, &schemas["VmmPingResponse"], 0, 0)).unwrap();
    assert_eq!(ping.version, "text");
    let states = schemas["VmState"]["enum"].as_array().unwrap().len();
    for pick in 0..states {
        let info: VmInfo =
            serde_json::from_value(example(&spec, &schemas["VmInfo"], pick, 0)).unwrap();
        let expected = [
            VmState::Created,
            VmState::Running,
            VmState::Shutdown,
            VmState::Paused,
            VmState::BreakPoint,
        ];
        assert_eq!(info.state, expected[pick]);
        // The reported config, all fields present, reads back as ours.
        let _: VmConfig = serde_json::from_value(info.config).unwrap();
    }
    // Only the required fields: still decodes.
    let _: VmmPingResponse = serde_json::from_value(json!({"version": "v1"})).unwrap();
}

/// A fake API server: checks each request line and body against the
/// document, answers GETs with schema examples and PUTs with 204 (or 500
/// for `vm.resize`, to see errors surface).
async fn fake_server(
    listener: tokio::net::UnixListener,
    spec: Value,
    requests: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..requests {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, length) = loop {
            let n = stream.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                break (end + 4, length);
            }
            assert!(n > 0, "request cut short");
        };
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut words = head.split_whitespace();
        let (method, target) = (
            words.next().unwrap().to_string(),
            words.next().unwrap().to_string(),
        );
        let path = target.strip_prefix("/api/v1").expect("API prefix");
        let op = &spec["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} not in the document");
        if let Some(body) = op.get("requestBody") {
            let schema = &body["content"]["application/json"]["schema"];
            let value: Value = serde_json::from_slice(&buf[head_end..]).unwrap();
            let mut errors = Vec::new();
            validate(&spec, schema, &value, path, &mut errors);
            assert!(errors.is_empty(), "{errors:#?}");
        }
        let response = if path == "/vm.resize" {
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\n\r\nresize refused"
                .to_string()
        } else if method == "GET" {
            let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
            let body = example(&spec, schema, 1, 0).to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
        };
        stream.write_all(response.as_bytes()).await.unwrap();
        seen.push(format!("{method} {path}"));
    }
    seen
}

#[test]
fn the_client_drives_a_fake_server_that_checks_the_document() {
    let Some(spec) = spec() else { return };
    let dir = dir("ch-fake");
    let socket = SocketPath::new(dir.join("api.sock")).unwrap();
    runtime().block_on(async {
        let listener = tokio::net::UnixListener::bind(socket.as_path()).unwrap();
        let server = tokio::spawn(fake_server(listener, spec, 11));
        let client = ChClient::new(socket.clone());
        assert_eq!(client.ping().await.unwrap().version, "text");
        client.create(&sample_config()).await.unwrap();
        client.action(Endpoint::VmBoot).await.unwrap();
        assert_eq!(client.info().await.unwrap().state, VmState::Running);
        client.action(Endpoint::VmPause).await.unwrap();
        client.snapshot(&dir.join("snap")).await.unwrap();
        client.action(Endpoint::VmResume).await.unwrap();
        client.restore(&dir.join("snap")).await.unwrap();
        match client
            .resize(&VmResize {
                desired_vcpus: Some(2),
                desired_ram: None,
            })
            .await
        {
            Err(Error::Api {
                status: 500,
                message,
                ..
            }) => assert_eq!(message, "resize refused"),
            other => panic!("expected an API error, got {other:?}"),
        }
        client.action(Endpoint::VmShutdown).await.unwrap();
        client.action(Endpoint::VmmShutdown).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 11);
        assert_eq!(seen[1], "PUT /vm.create");
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn decode_response_never_panics_on_garbage() {
    for bytes in [
        &b"HTTP/1.1 200\r\n\r\n"[..],
        b"\r\n\r\n",
        b"HTTP/1.1 999 X\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n:\r\n\r\n",
    ] {
        let _ = decode_response(bytes);
    }
}

/// The real thing, when this machine can run it: a `cloud-hypervisor`
/// binary and `/dev/kvm`. The VMM starts with only its API socket; ping and
/// `vmm.shutdown` go to the real process. (Booting a guest additionally needs
/// hardware KVM, which the QEMU canary decides; not on these machines, see
/// `../shared/docs/qemu-on-this-machine.md`.)
#[test]
fn real_cloud_hypervisor_answers_when_available() {
    let binary = std::process::Command::new("sh")
        .args(["-c", "command -v cloud-hypervisor"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !binary || !std::path::Path::new("/dev/kvm").exists() {
        eprintln!(
            "\n!!!!! NOT RUN: no cloud-hypervisor binary or /dev/kvm (the client is checked against the API document above) !!!!!\n"
        );
        return;
    }
    let dir = dir("ch-real");
    let socket = SocketPath::new(dir.join("api.sock")).unwrap();
    runtime().block_on(async {
        let mut child = tokio::process::Command::new("cloud-hypervisor")
            .arg("--api-socket")
            .arg(format!("path={socket}"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let client = ChClient::new(socket.clone());
        let mut ping = None;
        for _ in 0..200 {
            if let Ok(p) = client.ping().await {
                ping = Some(p);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(!ping.expect("vmm.ping answered").version.is_empty());
        client.action(Endpoint::VmmShutdown).await.unwrap();
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
        assert!(
            status.is_ok(),
            "cloud-hypervisor did not exit after vmm.shutdown"
        );
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// The whole backend on the real thing, when this machine can run it: a
/// `cloud-hypervisor` binary and a KVM that boots stock kernels (the QEMU
/// canary decides). Boots the test kernel with a busybox initramfs through
/// [`kiln_vmm::CloudHypervisor`], pauses, resumes, snapshots, kills,
/// restores. Never run on the machines these tests were written on (no
/// binary, no usable KVM): it says so.
#[test]
fn real_cloud_hypervisor_boots_snapshots_and_restores_when_kvm_works() {
    use kiln_vmm::{
        Accel, CloudHypervisor, GuestKernel, Hypervisor, Serial, Vm, VmState as State, accel_canary,
    };
    let binary = std::process::Command::new("sh")
        .args(["-c", "command -v cloud-hypervisor"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !binary {
        eprintln!("\n!!!!! NOT RUN: no cloud-hypervisor binary !!!!!\n");
        return;
    }
    let (Some(kernel), Some(init)) = (crate::qemu::test_kernel(), crate::guest::init_binary())
    else {
        return;
    };
    let dir = dir("ch-boot");
    let guest_kernel = GuestKernel::from_image(&kernel).unwrap();
    let (accel, why) = runtime().block_on(accel_canary(
        &guest_kernel,
        &init,
        &dir.join("canary"),
        std::time::Duration::from_secs(30),
    ));
    if accel != Accel::Kvm {
        eprintln!("\n!!!!! NOT RUN: KVM cannot boot the test kernel here ({why}) !!!!!\n");
        return;
    }
    let Some(initrd) = crate::qemu::busybox_initramfs(
        &dir,
        "/bin/busybox echo KILN-CH-UP\nexec /bin/busybox sleep 600\n",
    ) else {
        return;
    };
    let serial = dir.join("serial.log");
    let mut config = kiln_vmm::VmConfig::new(kernel);
    config.initrd = Some(initrd);
    config.cmdline = "console=ttyS0 panic=-1".into();
    config.serial = Serial::File(serial.clone());
    let ch = CloudHypervisor::new("cloud-hypervisor");
    let deadline = std::time::Duration::from_secs(60);
    runtime().block_on(async {
        let mut vm = ch.start(&config, &dir.join("one")).await.unwrap();
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains("KILN-CH-UP")
        {
            assert!(started.elapsed() < deadline, "the guest never came up");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(vm.info().await.unwrap().state, State::Running);
        vm.pause().await.unwrap();
        assert_eq!(vm.info().await.unwrap().state, State::Paused);
        vm.resume().await.unwrap();
        let snapshot = dir.join("snapshot");
        vm.snapshot(&snapshot, deadline).await.unwrap();
        vm.kill().await.unwrap();
        let mut restored = ch
            .restore(&config, &dir.join("two"), &snapshot, deadline)
            .await
            .unwrap();
        assert_eq!(restored.info().await.unwrap().state, State::Running);
        restored.kill().await.unwrap();
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_backend_drives_a_vm_through_the_documented_api() {
    use kiln_vmm::{ChVm, Disk, IoLimits, Serial, Vm, VmState as State, cloud_hypervisor};
    let Some(spec) = spec() else { return };
    let dir = dir("ch-vm");
    let socket = SocketPath::new(dir.join("api.sock")).unwrap();
    let mut config = kiln_vmm::VmConfig::new("/boot/vmlinux");
    config.initrd = Some("/boot/initramfs.cpio".into());
    config.cmdline = "console=ttyS0".into();
    config.cpus = 2;
    config.serial = Serial::File(dir.join("serial.log"));
    config.disks = vec![Disk {
        limits: Some(IoLimits {
            bytes_per_sec: Some(8 << 20),
            ops_per_sec: Some(500),
        }),
        ..Disk::new("/images/rootfs.ext4", true)
    }];
    config.vsock = Some(kiln_vmm::Cid::new(3).unwrap());
    config.memory_max = Some("512M".parse().unwrap());
    // The fake validates every request body against the document.
    let body = cloud_hypervisor::api_config(&config, &dir).unwrap();
    runtime().block_on(async {
        let listener = tokio::net::UnixListener::bind(socket.as_path()).unwrap();
        let server = tokio::spawn(fake_server(listener, spec, 12));
        let mut vm = ChVm::attach(socket.clone(), &body).await.unwrap();
        let info = vm.info().await.unwrap();
        assert_eq!(
            (info.state, info.hypervisor),
            (State::Running, "cloud-hypervisor")
        );
        assert!(info.capabilities.memory_resize && info.hardware_virtualization);
        vm.pause().await.unwrap();
        vm.resume().await.unwrap();
        vm.snapshot(&dir.join("snap"), std::time::Duration::from_secs(10))
            .await
            .unwrap();
        // Beyond the bound set at boot: refused before asking.
        let resize = vm.resize_memory("1G".parse().unwrap()).await;
        assert!(matches!(resize, Err(Error::InvalidConfig(_))), "{resize:?}");
        // The fake refuses resizes: the API's error comes back typed.
        let resize = vm.resize_memory("384M".parse().unwrap()).await;
        assert!(
            matches!(resize, Err(Error::Api { status: 500, .. })),
            "{resize:?}"
        );
        assert!(
            vm.take_console().is_none(),
            "no stream from a VMM we did not start"
        );
        vm.power_button().await.unwrap();
        vm.kill().await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(
            seen,
            [
                "GET /vmm.ping",
                "PUT /vm.create",
                "PUT /vm.boot",
                "GET /vm.info",
                "PUT /vm.pause",
                "PUT /vm.resume",
                "GET /vm.info",
                "PUT /vm.pause",
                "PUT /vm.snapshot",
                "PUT /vm.resize",
                "PUT /vm.power-button",
                "PUT /vmm.shutdown",
            ]
        );
    });
    std::fs::remove_dir_all(&dir).ok();
}
