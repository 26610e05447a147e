//! Validated configuration values: socket paths and memory sizes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// Longest unix socket path: `sun_path` holds 108 bytes including the NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// A unix socket path short enough for `sun_path` (a long temporary
/// directory is a classic way for a VMM's control socket to fail).
///
/// ```
/// use kiln_vmm::SocketPath;
/// assert!(SocketPath::new("/tmp/vm.qmp").is_ok());
/// assert!(SocketPath::new(format!("/tmp/{}", "x".repeat(120))).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketPath(PathBuf);

impl SocketPath {
    /// Validates `path`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSocketPath`] when it is empty, too long or not UTF-8.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let bad = |reason| Error::InvalidSocketPath {
            path: path.clone(),
            reason,
        };
        let Some(s) = path.to_str() else {
            return Err(bad("not UTF-8"));
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > MAX_SOCKET_PATH {
            return Err(bad("longer than the 107 bytes a unix socket path can have"));
        }
        if s.contains(',') {
            // QEMU's option parser would split the path.
            return Err(bad("contains a comma"));
        }
        Ok(Self(path))
    }

    /// The path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for SocketPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for SocketPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// A guest memory size in whole MiB (at least 16 MiB).
///
/// ```
/// use kiln_vmm::MemorySize;
/// assert_eq!("1G".parse::<MemorySize>().unwrap().mib(), 1024);
/// assert_eq!("256M".parse::<MemorySize>().unwrap().to_string(), "256M");
/// assert!("8M".parse::<MemorySize>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemorySize(u64);

impl MemorySize {
    /// Smallest guest memory accepted.
    pub const MIN_MIB: u64 = 16;

    /// A size in MiB.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMemory`] below [`Self::MIN_MIB`].
    pub fn from_mib(mib: u64) -> Result<Self, Error> {
        if !(Self::MIN_MIB..=(1 << 30)).contains(&mib) {
            return Err(Error::InvalidMemory(format!("{mib}M")));
        }
        Ok(Self(mib))
    }

    /// The size in MiB.
    pub fn mib(self) -> u64 {
        self.0
    }
}

impl FromStr for MemorySize {
    type Err = Error;

    /// `N` (bytes), `NK`, `NM` or `NG`; the result is whole MiB.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidMemory(s.to_owned());
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = s[..digits].parse().map_err(|_| bad())?;
        let bytes = match &s[digits..] {
            "" => Some(n),
            "K" | "k" => n.checked_mul(1 << 10),
            "M" | "m" => n.checked_mul(1 << 20),
            "G" | "g" => n.checked_mul(1 << 30),
            _ => None,
        }
        .ok_or_else(bad)?;
        if bytes % (1 << 20) != 0 {
            return Err(bad());
        }
        Self::from_mib(bytes >> 20).map_err(|_| bad())
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}M", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("16M", 16)]
    #[case("2G", 2048)]
    #[case("262144K", 256)]
    #[case("268435456", 256)]
    fn memory(#[case] s: &str, #[case] mib: u64) {
        assert_eq!(s.parse::<MemorySize>().unwrap().mib(), mib);
    }

    #[rstest]
    #[case("")]
    #[case("1.5G")]
    #[case("15M")]
    #[case("100")]
    #[case("99999999999999999999G")]
    #[case("1T")]
    fn bad_memory(#[case] s: &str) {
        assert!(s.parse::<MemorySize>().is_err());
    }

    #[test]
    fn socket_paths() {
        assert!(SocketPath::new("a".repeat(107)).is_ok());
        assert!(SocketPath::new("a".repeat(108)).is_err());
        assert!(SocketPath::new("").is_err());
        assert!(SocketPath::new("/tmp/a,b").is_err());
    }
}
