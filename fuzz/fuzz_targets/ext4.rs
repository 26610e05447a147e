//! Fuzz the tar→ext4 converter: arbitrary tar layers never panic it, and
//! whatever it writes passes `e2fsck -fn`.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

#[path = "common/ext4.rs"]
mod ext4;

fuzz_target!(|data: &[u8]| -> Corpus {
    let Some(image) = ext4::check(data) else {
        return Corpus::Reject;
    };
    let path = std::env::temp_dir().join(format!("kiln-fuzz-ext4-{}.img", std::process::id()));
    std::fs::write(&path, &image).expect("write the image for e2fsck");
    let out = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&path)
        .output()
        .expect("e2fsck (e2fsprogs) must be installed");
    // Removed before the verdict, so no run leaves its image behind.
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "e2fsck -fn rejected the output:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Corpus::Keep
});
