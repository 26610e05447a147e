//! Platforms (`os/arch[/variant]`), parsed and normalised like containerd's
//! `platforms.Parse`, and the automatic platform build args BuildKit defines.

use std::fmt;
use std::str::FromStr;

/// A normalised platform.
///
/// ```
/// use kiln_dockerfile::Platform;
/// let p: Platform = "linux/aarch64".parse().unwrap();
/// assert_eq!(p.to_string(), "linux/arm64");
/// assert_eq!("linux/arm64/v8".parse::<Platform>().unwrap().variant(), "v8");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    arch: String,
    variant: String,
}

/// Why a platform string was rejected (containerd's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlatformError(String);

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// The platform of this machine (Linux with its architecture).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            other => other,
        };
        let (arch, variant) = normalize_arch(arch, "");
        Self {
            os: "linux".to_owned(),
            arch,
            variant,
        }
    }

    /// Operating system, e.g. `linux`.
    pub fn os(&self) -> &str {
        &self.os
    }

    /// Architecture, e.g. `amd64`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Variant, e.g. `v7` (empty when none).
    pub fn variant(&self) -> &str {
        &self.variant
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = |why: String| PlatformError(format!("{why}: invalid argument"));
        if spec.contains('*') {
            return Err(invalid(format!("{spec:?}: wildcards not yet supported")));
        }
        let parts: Vec<&str> = spec.split('/').collect();
        for part in &parts {
            let ok = !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(invalid(format!(
                    "{part:?} is an invalid component of {spec:?}: platform specifier component must match \"^[A-Za-z0-9_.-]+$\""
                )));
            }
        }
        let host = Self::host();
        match parts[..] {
            [one] => {
                let os = normalize_os(one);
                if KNOWN_OS.contains(&os.as_str()) {
                    return Ok(Self {
                        os,
                        arch: host.arch,
                        variant: host.variant,
                    });
                }
                let (arch, mut variant) = normalize_arch(one, "");
                if arch == "arm" && variant == "v7" {
                    variant.clear();
                }
                if KNOWN_ARCH.contains(&arch.as_str()) {
                    return Ok(Self {
                        os: host.os,
                        arch,
                        variant,
                    });
                }
                Err(invalid(format!(
                    "{spec:?}: unknown operating system or architecture"
                )))
            }
            [os, arch] => {
                let (arch, mut variant) = normalize_arch(arch, "");
                if arch == "arm" && variant == "v7" {
                    variant.clear();
                }
                Ok(Self {
                    os: normalize_os(os),
                    arch,
                    variant,
                })
            }
            [os, arch, variant] => {
                let (arch, mut variant) = normalize_arch(arch, variant);
                if arch == "arm64" && variant.is_empty() {
                    variant = "v8".into();
                }
                Ok(Self {
                    os: normalize_os(os),
                    arch,
                    variant,
                })
            }
            _ => Err(invalid(format!(
                "{spec:?}: cannot parse platform specifier"
            ))),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// BuildKit's automatic args (`BUILDPLATFORM`, `TARGETARCH`, ...), in the
/// order it defines them.
pub(crate) fn automatic_args(
    build: &Platform,
    target: &Platform,
    target_stage: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(11);
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}OSVERSION"), String::new()));
        out.push((format!("{prefix}ARCH"), p.arch.clone()));
        out.push((format!("{prefix}VARIANT"), p.variant.clone()));
    }
    out.push(("TARGETSTAGE".to_owned(), target_stage.to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("linux/amd64", "linux/amd64")]
    #[case("linux/x86_64", "linux/amd64")]
    #[case("Linux/ARM64", "linux/arm64")]
    #[case("linux/arm64/v8", "linux/arm64/v8")]
    #[case("linux/arm", "linux/arm")]
    #[case("linux/arm/v7", "linux/arm/v7")]
    #[case("linux/armhf", "linux/arm")]
    #[case("linux/arm/6", "linux/arm/v6")]
    #[case("windows/amd64", "windows/amd64")]
    #[case("macos/arm64", "darwin/arm64")]
    #[case("s390x", "linux/s390x")]
    fn parses(#[case] spec: &str, #[case] want: &str) {
        assert_eq!(spec.parse::<Platform>().unwrap().to_string(), want);
    }

    #[rstest]
    #[case("")]
    #[case("linux/*")]
    #[case("foo")]
    #[case("a/b/c/d")]
    #[case("linux//amd64")]
    fn rejects(#[case] spec: &str) {
        assert!(spec.parse::<Platform>().is_err());
    }
}
