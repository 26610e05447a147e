//! Guest networking over rtnetlink: the loopback up, and `eth0` with a
//! static address and default route (no `ip`, no DHCP client needed in the
//! image).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use kiln_init::NetworkConfig;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    socket,
};

use crate::Result;

// From <linux/rtnetlink.h>, <linux/netlink.h>, <linux/if_addr.h>, <linux/if.h>.
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// Brings `lo` up and, with `config`, configures `eth0`. Without a
/// network asked for, a failure is only a warning.
pub(crate) fn configure(config: Option<&NetworkConfig>) -> Result<()> {
    let loopback = Rtnl::open().and_then(|rtnl| {
        rtnl.link_up(ifindex("lo")?)?;
        Ok(rtnl)
    });
    let Some(net) = config else {
        if let Err(e) = loopback {
            eprintln!("kiln-init: loopback: {e}");
        }
        return Ok(());
    };
    let rtnl = loopback?;
    crate::wait_for(Path::new("/sys/class/net/eth0"), Duration::from_secs(10))?;
    let eth0 = ifindex("eth0")?;
    rtnl.link_up(eth0)?;
    rtnl.add_address(eth0, net.address, net.prefix)?;
    rtnl.add_default_route(eth0, net.gateway)
}

/// `/etc/resolv.conf` naming `config`'s DNS server (in the current root;
/// an image's symlink there, e.g. into `/run`, is replaced).
pub(crate) fn write_resolv_conf(config: &NetworkConfig) -> Result<()> {
    let [a, b, c, d] = config.dns;
    std::fs::create_dir_all("/etc").map_err(|e| format!("mkdir /etc: {e}"))?;
    let _ = std::fs::remove_file("/etc/resolv.conf");
    std::fs::write("/etc/resolv.conf", format!("nameserver {a}.{b}.{c}.{d}\n"))
        .map_err(|e| format!("write /etc/resolv.conf: {e}"))
}

fn ifindex(name: &str) -> Result<u32> {
    let path = format!("/sys/class/net/{name}/ifindex");
    std::fs::read_to_string(&path)
        .map_err(|e| format!("read {path}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{path}: {e}"))
}

/// A route netlink socket.
struct Rtnl {
    fd: OwnedFd,
}

impl Rtnl {
    fn open() -> Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| format!("netlink socket: {e}"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| format!("netlink bind: {e}"))?;
        Ok(Self { fd })
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&self, what: &str, kind: u16, flags: u16, body: &[u8]) -> Result<()> {
        let message = nlmsg(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body);
        sendto(
            self.fd.as_raw_fd(),
            &message,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|e| format!("{what}: {e}"))?;
        let mut reply = [0u8; 4096];
        let n = recv(self.fd.as_raw_fd(), &mut reply, MsgFlags::empty())
            .map_err(|e| format!("{what}: {e}"))?;
        match ack_error(&reply[..n]) {
            Some(0) => Ok(()),
            Some(errno) => Err(format!(
                "{what}: {}",
                nix::errno::Errno::from_raw(errno.checked_neg().unwrap_or(0)).desc()
            )),
            None => Err(format!("{what}: no acknowledgement")),
        }
    }

    fn link_up(&self, index: u32) -> Result<()> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut body = vec![AF_UNSPEC, 0, 0, 0];
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend_from_slice(&IFF_UP.to_ne_bytes());
        body.extend_from_slice(&IFF_UP.to_ne_bytes());
        self.request(&format!("bring link {index} up"), RTM_NEWLINK, 0, &body)
    }

    fn add_address(&self, index: u32, address: [u8; 4], prefix: u8) -> Result<()> {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index.
        let mut body = vec![AF_INET, prefix, 0, RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&index.to_ne_bytes());
        attr(&mut body, IFA_LOCAL, &address);
        attr(&mut body, IFA_ADDRESS, &address);
        self.request(
            "add the address",
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            &body,
        )
    }

    fn add_default_route(&self, index: u32, gateway: [u8; 4]) -> Result<()> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
        // scope, type, flags.
        let mut body = vec![
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ];
        body.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut body, RTA_GATEWAY, &gateway);
        attr(&mut body, RTA_OIF, &index.to_ne_bytes());
        self.request(
            "add the default route",
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_EXCL,
            &body,
        )
    }
}

/// A netlink message: `struct nlmsghdr` (length, type, flags, seq, pid)
/// and the body.
fn nlmsg(kind: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let len = 16 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// Appends a route attribute (`struct rtattr`: length, type; padded to 4).
fn attr(body: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    body.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(value);
    body.resize(body.len().next_multiple_of(4), 0);
}

/// The error code of an `NLMSG_ERROR` reply (0 is an acknowledgement).
fn ack_error(reply: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    Some(i32::from_ne_bytes(reply.get(16..20)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_laid_out_as_the_kernel_reads_them() {
        let m = nlmsg(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, &[1, 2, 3, 4]);
        assert_eq!(m.len(), 20);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWADDR);
        let mut body = Vec::new();
        attr(&mut body, RTA_GATEWAY, &[10, 0, 2, 2]);
        attr(&mut body, 9, &[7]);
        assert_eq!(body.len(), 16, "each attribute padded to 4 bytes");
        assert_eq!(&body[..8], &[8, 0, 5, 0, 10, 0, 2, 2]);
        let mut ack = nlmsg(NLMSG_ERROR, 0, &(-17i32).to_ne_bytes());
        assert_eq!(ack_error(&ack), Some(-17));
        ack[4] = 3;
        assert_eq!(ack_error(&ack), None);
        assert_eq!(ack_error(&[0; 3]), None);
    }
}
