//! `kiln cache plan | access`.

use std::process::{Command, Output};

use serde_json::{Value, json};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 on stdout")
}

fn stderr_of_failure(out: &Output) -> String {
    assert!(!out.status.success(), "kiln succeeded unexpectedly");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tenant_plan_as_buildctl_lines() {
    let out = kiln(&[
        "cache",
        "plan",
        "--registry",
        "10.0.0.1:5000",
        "--tenant",
        "Acme",
        "--global-key",
        "node",
    ]);
    assert_eq!(
        stdout(&out),
        "--import-cache\n\
         type=registry,ref=10.0.0.1:5000/cache/global/node\n\
         --import-cache\n\
         type=registry,ref=10.0.0.1:5000/cache/acme\n\
         --export-cache\n\
         type=registry,ref=10.0.0.1:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true\n"
    );
}

#[test]
fn admin_plan_as_buildx_lines() {
    let out = kiln(&[
        "cache",
        "plan",
        "--registry",
        "localhost:5000/kiln",
        "--admin",
        "--global-key",
        "python",
        "--format",
        "buildx",
        "--compression",
        "zstd",
        "--compression-level",
        "19",
        "--insecure",
    ]);
    assert_eq!(
        stdout(&out),
        "--cache-from\n\
         type=registry,ref=localhost:5000/kiln/cache/global/python,registry.insecure=true\n\
         --cache-to\n\
         type=registry,ref=localhost:5000/kiln/cache/global/python,mode=max,image-manifest=true,oci-mediatypes=true,compression=zstd,compression-level=19,ignore-error=false,registry.insecure=true\n"
    );
}

#[test]
fn plan_as_json() {
    let out = kiln(&[
        "cache",
        "plan",
        "--registry",
        "[::1]:5000",
        "--tenant",
        "acme",
        "--format",
        "json",
        "--ignore-error",
        "false",
    ]);
    let got: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(
        got,
        json!({
            "registry": "[::1]:5000",
            "role": "tenant",
            "tenant": "acme",
            "global_key": null,
            "imports": ["type=registry,ref=[::1]:5000/cache/acme"],
            "export": "type=registry,ref=[::1]:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=false"
        })
    );
}

#[test]
fn access_scopes() {
    let out = kiln(&[
        "cache",
        "access",
        "--registry",
        "10.0.0.1:5000",
        "--tenant",
        "acme",
        "--global-key",
        "node",
        "--build-id",
        "42",
        "--base-image",
        "docker.io/library/node",
    ]);
    assert_eq!(
        stdout(&out),
        "repository:cache/global/node:pull\n\
         repository:cache/acme:pull,push\n\
         repository:builds/42:pull,push\n\
         repository:docker.io/library/node:pull\n"
    );
    let out = kiln(&[
        "cache",
        "access",
        "--registry",
        "10.0.0.1:5000",
        "--admin",
        "--global-key",
        "node",
        "--build-id",
        "42",
        "--format",
        "json",
    ]);
    let got: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(
        got,
        json!([
            {"repository": "cache/global/node", "actions": ["pull", "push"]},
            {"repository": "builds/42", "actions": ["pull", "push"]}
        ])
    );
}

#[test]
fn admin_without_global_key_fails() {
    let err = stderr_of_failure(&kiln(&[
        "cache",
        "plan",
        "--registry",
        "10.0.0.1:5000",
        "--admin",
    ]));
    assert!(
        err.contains("an admin build needs a global cache key to export to"),
        "{err}"
    );
}

#[test]
fn tenant_and_admin_are_exclusive_and_one_is_required() {
    let err = stderr_of_failure(&kiln(&[
        "cache",
        "plan",
        "--registry",
        "r:5000",
        "--admin",
        "--tenant",
        "acme",
    ]));
    assert!(err.contains("cannot be used with"), "{err}");
    let err = stderr_of_failure(&kiln(&["cache", "plan", "--registry", "r:5000"]));
    assert!(err.contains("required"), "{err}");
}

#[test]
fn invalid_names_are_reported() {
    for (flag, value, message) in [
        ("--tenant", "global", "reserved name"),
        ("--tenant", "a/b", "is not one of a-z"),
        ("--registry", "http://r:5000", "URL scheme"),
        ("--registry", "reg", "Docker Hub namespace"),
    ] {
        let mut args = vec!["cache", "plan", "--registry", "r:5000", "--tenant", "acme"];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
        let err = stderr_of_failure(&kiln(&args));
        assert!(err.contains(message), "{flag} {value}: {err}");
    }
    let err = stderr_of_failure(&kiln(&[
        "cache",
        "plan",
        "--registry",
        "r:5000",
        "--tenant",
        "acme",
        "--compression",
        "gzip",
        "--compression-level",
        "12",
    ]));
    assert!(err.contains("not valid for gzip"), "{err}");
}

#[test]
fn cache_base_images_are_refused() {
    let err = stderr_of_failure(&kiln(&[
        "cache",
        "access",
        "--registry",
        "r:5000",
        "--tenant",
        "acme",
        "--build-id",
        "1",
        "--base-image",
        "cache/other",
    ]));
    assert!(err.contains("is a build-cache repository"), "{err}");
}
