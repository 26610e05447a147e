//! `kiln mirror` (the copy itself is tested against real registries in
//! `oci-mirror/tests`).

use std::process::Command;

use crate::peers::{Layout, Registry, have, htpasswd_registry, ok, scratch, skopeo, tools};

#[test]
fn bad_locations_and_unreachable_registries_fail_clearly() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .output()
            .expect("run kiln")
    };
    let out = run(&["mirror", "docker://h.io/Bad/Name", "h.io/x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid image location"));

    // Nothing listens on port 9 of loopback.
    let out = run(&[
        "mirror",
        "docker://127.0.0.1:9/a:1",
        "127.0.0.1:9/b:1",
        "--src-insecure",
        "--dest-insecure",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9"), "{err}");

    // A registry that takes connections and never answers: the total
    // deadline ends the copy.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let out = run(&[
        "mirror",
        &format!("docker://{host}/a:1"),
        &format!("{host}/b:1"),
        "--src-insecure",
        "--dest-insecure",
        "--retries",
        "1",
        "--timeout",
        "2s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not finish within 2s"), "{err}");
    drop(silent);

    let out = run(&["mirror", "docker://h.io/a:1", "h.io/b:1", "--retries", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--retries"), "{err}");
}

#[test]
fn credentials_come_from_a_docker_credential_helper() {
    if !tools() || !have("htpasswd") {
        return;
    }
    let dir = scratch("cli-helper");
    let a = Registry::start(&dir.join("a"));
    let b = htpasswd_registry(&dir.join("b"));
    let layout = Layout::new(&dir.join("layout"));
    let m = layout.image(5, &[256 << 10], "amd64");
    layout.tag("v1", &[(m.0.clone(), m.1, "amd64")]);
    layout.push("v1", &format!("{}/src/app:v1", a.host), false);
    // Helpers speaking the docker-credential-helpers protocol (the server
    // on stdin, JSON on stdout, "credentials not found" otherwise): one for
    // the destination (credHelpers), a store that knows nothing
    // (credsStore). Each logs what it was asked.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("helper.log");
    for (name, knows) in [("kilndest", b.host.as_str()), ("kilnstore", "nothing")] {
        let helper = bin.join(format!("docker-credential-{name}"));
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\necho \"{name} $server\" >> {log}\n\
                 if [ \"$server\" = {knows} ]; then echo '{{\"Username\":\"kiln\",\"Secret\":\"s3cret\"}}'; \
                 else echo 'credentials not found in native keychain'; exit 1; fi\n",
                log = log.display(),
            ),
        )
        .unwrap();
        ok(Command::new("chmod")
            .arg("+x")
            .arg(&helper)
            .output()
            .unwrap());
    }
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"credsStore": "kilnstore", "credHelpers": {{"{}": "kilndest"}}}}"#,
            b.host
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("PATH", path)
        .args([
            "mirror",
            "--src-insecure",
            "--dest-insecure",
            "--docker-config",
        ])
        .arg(&config)
        .arg(format!("docker://{}/src/app:v1", a.host))
        .arg(format!("{}/mirror/app:v1", b.host))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The source asked the store (which knew nothing: anonymous), the
    // destination its own helper.
    let asked = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        asked.lines().collect::<Vec<_>>(),
        [
            format!("kilnstore {}", a.host),
            format!("kilndest {}", b.host)
        ]
    );
    ok(skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "kiln:s3cret",
        &format!("docker://{}/mirror/app:v1", b.host),
    ]));
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}
