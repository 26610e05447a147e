//! Registry hosts as one repository path component, so that every image
//! reference has a name under a mirror: `{mirror}/{host}/{path}`.
//!
//! A host is written as it is when it already is a valid path component
//! (`docker.io`, `ghcr.io`, `localhost`, `10.0.0.5`). Otherwise:
//! - a port follows the host after `__`: `localhost:5000` → `localhost__5000`,
//!   `registry.example.com:443` → `registry.example.com__443` (the port is
//!   kept even when it is the default: the reference named it);
//! - an IPv6 host is `ipv6_` and its eight groups, four hex digits each,
//!   joined by `.`: `[::1]:5000` → `ipv6_0000.0000.0000.0000.0000.0000.0000.0001__5000`;
//! - letters are lower-cased (host names compare case-insensitively).
//!
//! No host name contains `_` (DNS labels are letters, digits and `-`), so an
//! encoded host never equals a plain one, and the encoding reads back
//! ([`registry_from_component`]): no two registries share a mirrored name.

use std::net::Ipv6Addr;

/// The path component naming `registry` (`host[:port]` or `[v6]:port`),
/// `None` when it is not a registry host distribution accepts.
///
/// ```
/// use kiln_dockerfile::registry_component;
/// assert_eq!(registry_component("docker.io").as_deref(), Some("docker.io"));
/// assert_eq!(registry_component("localhost:5000").as_deref(), Some("localhost__5000"));
/// assert_eq!(
///     registry_component("[::1]:5000").as_deref(),
///     Some("ipv6_0000.0000.0000.0000.0000.0000.0000.0001__5000")
/// );
/// assert_eq!(registry_component("bad host"), None);
/// ```
pub fn registry_component(registry: &str) -> Option<String> {
    let (host, port) = split_port(registry)?;
    let mut out = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return None;
        }
        let addr: Ipv6Addr = v6.parse().ok()?;
        let groups: Vec<String> = addr.segments().iter().map(|g| format!("{g:04x}")).collect();
        format!("ipv6_{}", groups.join("."))
    } else {
        if !is_host_name(host) {
            return None;
        }
        host.to_ascii_lowercase()
    };
    if let Some(p) = port {
        out.push_str("__");
        out.push_str(p);
    }
    Some(out)
}

/// The registry a [`registry_component`] names (`localhost__5000` →
/// `localhost:5000`, `ipv6_…__5000` → `[::1]:5000`); `None` for a component
/// that is no encoded registry.
///
/// ```
/// use kiln_dockerfile::registry_from_component;
/// assert_eq!(registry_from_component("localhost__5000").as_deref(), Some("localhost:5000"));
/// assert_eq!(registry_from_component("ipv6_0000.0000.0000.0000.0000.0000.0000.0001").as_deref(), Some("[::1]"));
/// assert_eq!(registry_from_component("library"), Some("library".to_owned()));
/// ```
pub fn registry_from_component(component: &str) -> Option<String> {
    let (host, port) = match component.split_once("__") {
        Some((h, p)) => (h, Some(p)),
        None => (component, None),
    };
    if let Some(p) = port
        && !is_port(p)
    {
        return None;
    }
    let host = if let Some(groups) = host.strip_prefix("ipv6_") {
        let parts: Vec<&str> = groups.split('.').collect();
        if parts.len() != 8
            || !parts
                .iter()
                .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        let mut seg = [0u16; 8];
        for (s, g) in seg.iter_mut().zip(&parts) {
            *s = u16::from_str_radix(g, 16).ok()?;
        }
        format!("[{}]", Ipv6Addr::from(seg))
    } else if is_host_name(host) && host == host.to_ascii_lowercase() {
        host.to_owned()
    } else {
        return None;
    };
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u32>().is_ok_and(|n| n <= 65_535)
}

/// `host` and its port, split at the last `:` outside brackets.
fn split_port(registry: &str) -> Option<(&str, Option<&str>)> {
    let after_host = if registry.starts_with('[') {
        registry.find(']')? + 1
    } else {
        0
    };
    match registry[after_host..].find(':') {
        Some(i) => {
            let (host, port) = (&registry[..after_host + i], &registry[after_host + i + 1..]);
            is_port(port).then_some((host, Some(port)))
        }
        None => Some((registry, None)),
    }
}

/// DNS-style labels of letters, digits and inner `-`, joined by `.`.
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registry_form_round_trips() {
        for (registry, component) in [
            ("docker.io", "docker.io"),
            ("localhost", "localhost"),
            ("localhost:5000", "localhost__5000"),
            ("10.0.0.5:8443", "10.0.0.5__8443"),
            ("registry.example.com:443", "registry.example.com__443"),
            (
                "[::1]:5000",
                "ipv6_0000.0000.0000.0000.0000.0000.0000.0001__5000",
            ),
            (
                "[2001:db8::8a2e:370:7334]",
                "ipv6_2001.0db8.0000.0000.0000.8a2e.0370.7334",
            ),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(
                registry_component(registry).as_deref(),
                Some(component),
                "{registry}"
            );
            assert_eq!(
                registry_from_component(component).as_deref(),
                Some(registry),
                "{component}"
            );
        }
        assert_eq!(
            registry_component("Reg-1.Example.com:443").as_deref(),
            Some("reg-1.example.com__443")
        );
        for bad in [
            "",
            "a b",
            "-x.io",
            "x-.io",
            "[::1",
            "[zz::1]",
            "h:99999",
            "h:",
            "a_b.io",
            "[::ffff:1.2.3.4]",
        ] {
            assert_eq!(registry_component(bad), None, "{bad}");
        }
        for bad in [
            "a__",
            "a__x",
            "ipv6_1.2",
            "UPPER",
            "ipv6_0000.0000.0000.0000.0000.0000.0000.000g",
        ] {
            assert_eq!(registry_from_component(bad), None, "{bad}");
        }
    }
}
