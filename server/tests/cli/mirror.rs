//! `kiln mirror` (the copy itself is tested against real registries in
//! `oci-mirror/tests`).

use std::process::Command;

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
}
