//! The guest side of a Kiln microVM.
//!
//! The host packs the `kiln-init` binary as `/init` of an initramfs, with
//! the kernel modules the guest needs under `/kiln/modules/` and an
//! [`InitConfig`] as `/kiln/init.json`. `kiln-init` then mounts `/dev`,
//! `/proc` and `/sys`, loads the modules, mounts the image's ext4 read-only
//! with a tmpfs overlay for writes, switches into it, runs the workload as
//! the image's user with its environment and working directory, forwards
//! the workload's output to the console, ends whatever the workload left
//! running, reports `exit=N` (on the console line named by
//! [`InitConfig::report`], or on a virtio-serial channel) and powers the
//! VM off.
//!
//! This library part holds the configuration and the pure decisions (user
//! and environment resolution) so the host and tests share them; the
//! binary (`src/main.rs`) does the system calls. Build it statically:
//!
//! ```sh
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
//!     -p kiln-init --target x86_64-unknown-linux-gnu --target-dir target/init
//! ```

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Where the host puts the configuration in the initramfs.
pub const CONFIG_PATH: &str = "/kiln/init.json";
/// Where the host puts the modules (loaded in `InitConfig::modules` order).
pub const MODULE_DIR: &str = "/kiln/modules";
/// The `PATH` a workload gets when its image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run, decided by the host from the image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// The workload's argv (entrypoint + cmd, or the caller's override).
    pub argv: Vec<String>,
    /// `NAME=value` pairs from the image.
    pub env: Vec<String>,
    /// Working directory (empty = `/`).
    pub working_dir: String,
    /// `user[:group]`, names or numbers (empty = root).
    pub user: String,
    /// Block device holding the image's ext4 (`/dev/vda`).
    pub root_device: String,
    /// Name of the virtio-serial port for reports (`kiln.0`).
    pub channel: String,
    /// Module file names under [`MODULE_DIR`], in load order.
    pub modules: Vec<String>,
    /// Signal sent to the workload when the VM's power button is pressed
    /// (the image's `StopSignal`; empty = `SIGTERM`).
    #[serde(default)]
    pub stop_signal: String,
    /// How to configure `eth0` (its driver among `modules`); `None`: only
    /// the loopback interface.
    #[serde(default)]
    pub network: Option<NetworkConfig>,
    /// Without a `channel`: a secret the host chose, naming the console
    /// line `kiln-init` reports on ([`report_line`]); the workload cannot
    /// read it (it lives in the initramfs, outside the workload's root) and
    /// so cannot forge the report unless it runs as root, which owns the
    /// guest anyway.
    #[serde(default)]
    pub report: String,
}

/// What starts the console report `kiln-init` writes: a NUL byte (so a
/// reader streaming the console can hold back a report that is still
/// arriving without holding back newlines) and a word.
pub const REPORT_PREFIX: &str = "\0KILN-REPORT ";

/// The console report for `nonce`: `exit=N` or `error=MESSAGE`, ended by a
/// newline.
pub fn report_line(nonce: &str, what: &str) -> String {
    let what = what.replace(['\n', '\r'], " ");
    format!("{REPORT_PREFIX}{nonce} {what}\n")
}

/// Splits a console into the workload's output and the report for `nonce`
/// (`exit=N` or `error=...`): the last complete report for that nonce is
/// cut out; everything else is the output, byte for byte. `None` when
/// there is no complete report (a report cut short is none).
pub fn split_report(console: &[u8], nonce: &str) -> Option<(Vec<u8>, String)> {
    let marker = format!("{REPORT_PREFIX}{nonce} ");
    let marker = marker.as_bytes();
    let start = console.windows(marker.len()).rposition(|w| w == marker)?;
    let rest = &console[start + marker.len()..];
    let end = rest.iter().position(|&b| b == b'\n')?;
    let mut output = console[..start].to_vec();
    output.extend_from_slice(&rest[end + 1..]);
    Some((output, String::from_utf8_lossy(&rest[..end]).into_owned()))
}

/// How much of a console still being written can be shown: everything
/// before the first report marker, less a trailing part that may be the
/// start of one.
pub fn streamable(console: &[u8]) -> usize {
    let marker = REPORT_PREFIX.as_bytes();
    let end = console
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap_or(console.len());
    let held = (1..marker.len())
        .rev()
        .find(|&n| n <= end && console[end - n..end] == marker[..n])
        .unwrap_or(0);
    end - held
}

/// A static IPv4 configuration for the guest's `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The guest's address.
    pub address: [u8; 4],
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: [u8; 4],
    /// The DNS server written to `/etc/resolv.conf`.
    pub dns: [u8; 4],
}

impl NetworkConfig {
    /// QEMU's user-mode NAT (slirp): 10.0.2.15/24, gateway 10.0.2.2 (the
    /// host's loopback), DNS 10.0.2.3.
    pub const USER_MODE: Self = Self {
        address: [10, 0, 2, 15],
        prefix: 24,
        gateway: [10, 0, 2, 2],
        dns: [10, 0, 2, 3],
    };
}

/// A resolved identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Why a user or group could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownUser(pub String);

impl std::fmt::Display for UnknownUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown user or group {:?}", self.0)
    }
}

impl std::error::Error for UnknownUser {}

/// Resolves `user[:group]` as Docker does: numbers as they are, names from
/// the image's `/etc/passwd` and `/etc/group` (given as text); a user
/// without a group gets its passwd group, or 0 for an unknown uid. Returns
/// the identity and the user's home (`/` when unknown).
pub fn resolve_user(
    spec: &str,
    passwd: &str,
    group: &str,
) -> Result<(Identity, String), UnknownUser> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').map(String::from).collect())
            .collect()
    };
    let users = entries(passwd);
    let find_user = |pred: &dyn Fn(&Vec<String>) -> bool| {
        users.iter().find(|e| e.len() >= 6 && pred(e)).cloned()
    };
    let (uid, primary_gid, home) = if user.is_empty() {
        (0, 0, "/root".to_string())
    } else if let Ok(uid) = user.parse::<u32>() {
        match find_user(&|e| e[2] == user) {
            Some(e) => (uid, e[3].parse().unwrap_or(0), e[5].clone()),
            None => (uid, 0, "/".to_string()),
        }
    } else {
        let e = find_user(&|e| e[0] == user).ok_or_else(|| UnknownUser(user.to_string()))?;
        let uid = e[2].parse().map_err(|_| UnknownUser(user.to_string()))?;
        (uid, e[3].parse().unwrap_or(0), e[5].clone())
    };
    let gid = match grp {
        None | Some("") => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(group)
                .iter()
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| UnknownUser(g.to_string()))?,
        },
    };
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };
    Ok((Identity { uid, gid }, home))
}

/// The workload's environment: the image's, plus `PATH` and `HOME` when it
/// sets none (as Docker does).
pub fn environment(image_env: &[String], home: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = image_env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home.into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_cut_out_of_the_console_exactly() {
        for output in ["", "hello\n", "no newline", "a\nb\n\n", "crlf\r\n"] {
            let console = format!("{output}{}", report_line("n0nce", "exit=3"));
            let (rest, what) = split_report(console.as_bytes(), "n0nce").unwrap();
            assert_eq!(
                (rest.as_slice(), what.as_str()),
                (output.as_bytes(), "exit=3")
            );
        }
        // Another nonce, an empty one, or a report cut short is no report.
        let forged = format!("x{}", report_line("guess", "exit=0"));
        assert!(split_report(forged.as_bytes(), "n0nce").is_none());
        assert!(split_report(forged.as_bytes(), "").is_none());
        let cut = report_line("n0nce", "exit=127");
        assert!(split_report(&cut.as_bytes()[..cut.len() - 2], "n0nce").is_none());
        // The last report counts; an earlier (forged) one stays output, and
        // invalid UTF-8 around it survives byte for byte.
        let mut two = b"\xff".to_vec();
        two.extend_from_slice(report_line("n", "exit=0").as_bytes());
        two.extend_from_slice(report_line("n", "error=a\nb").as_bytes());
        let (rest, what) = split_report(&two, "n").unwrap();
        let mut want = b"\xff".to_vec();
        want.extend_from_slice(report_line("n", "exit=0").as_bytes());
        assert_eq!((rest, what.as_str()), (want, "error=a b"));
    }

    #[test]
    fn streaming_holds_back_only_what_may_be_a_report() {
        assert_eq!(streamable(b"one\ntw"), 6, "partial lines stream");
        assert_eq!(streamable(b"one\n"), 4, "newlines are never held");
        assert_eq!(streamable(b"one\n\0KILN-RE"), 4);
        assert_eq!(streamable(b"one\0"), 3);
        assert_eq!(streamable(b"one\0KILN-REPORT abc exit=0\nmore"), 3);
        assert_eq!(streamable(b""), 0);
    }

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    #[test]
    fn users_resolve_like_docker() {
        let id = |uid, gid| Identity { uid, gid };
        assert_eq!(
            resolve_user("", PASSWD, GROUP).unwrap(),
            (id(0, 0), "/root".into())
        );
        assert_eq!(
            resolve_user("www", PASSWD, GROUP).unwrap(),
            (id(33, 34), "/var/www".into())
        );
        assert_eq!(resolve_user("33", PASSWD, GROUP).unwrap().0, id(33, 34));
        assert_eq!(
            resolve_user("1000", PASSWD, GROUP).unwrap(),
            (id(1000, 0), "/".into())
        );
        assert_eq!(
            resolve_user("1000:1000", PASSWD, GROUP).unwrap().0,
            id(1000, 1000)
        );
        assert_eq!(
            resolve_user("www:staff", PASSWD, GROUP).unwrap().0,
            id(33, 50)
        );
        assert!(resolve_user("nobody", PASSWD, GROUP).is_err());
        assert!(resolve_user("www:nogroup", PASSWD, GROUP).is_err());
    }

    #[test]
    fn environment_gets_path_and_home_defaults() {
        let env = environment(&["FOO=bar".into(), "EMPTY".into()], "/root");
        assert!(env.contains(&("FOO".into(), "bar".into())));
        assert!(env.contains(&("EMPTY".into(), String::new())));
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
        assert!(env.contains(&("HOME".into(), "/root".into())));
        let env = environment(&["PATH=/x".into()], "/");
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }
}
