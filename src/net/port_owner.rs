//! Who else listens on our port: the check that keeps `SO_REUSEPORT` to
//! tickwire's own workers.
//!
//! Each worker has its own `SO_REUSEPORT` listener so the kernel spreads
//! connections across workers with no shared accept queue. The kernel lets
//! any socket of the same user join that group, so a second `tickwire
//! serve` on the same port would bind without error and silently take half
//! of the new connections, with its own `seq` space. Sockets of another
//! user, or without `SO_REUSEPORT`, already get `EADDRINUSE` from the
//! kernel; this module catches the same-user case.
//!
//! Why a check after `listen()` rather than a probe before `bind()`: a probe
//! socket must be closed before the reuseport sockets can bind, and two
//! servers starting together could both pass it. Checking after our own
//! sockets listen has no such window: of two servers, the one that
//! listens second always sees the first one's socket in `/proc/net/tcp*`
//! (both may see each other and both refuse, which is the safe way to lose
//! a race). One shared, duplicated listener would also be exclusive, but
//! every worker's epoll would wake for every connection and one worker
//! would accept whole bursts, undoing the per-core spread the fan-out is
//! built on.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// The `st` value of a listening socket in `/proc/net/tcp*`.
const TCP_LISTEN: &str = "0A";

/// Fails with `AddrInUse` when a listening socket that is not one of `ours`
/// (in this network namespace, of any process) overlaps `addr`: same port,
/// and the same address or a wildcard on either side.
pub(crate) fn ensure_sole_listener(
    addr: SocketAddr,
    ours: &[&std::net::TcpListener],
) -> io::Result<()> {
    let inodes = ours
        .iter()
        .map(|l| socket_inode(l))
        .collect::<io::Result<HashSet<u64>>>()?;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // A kernel without IPv6 has no tcp6 table: nothing listens there.
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for (at, inode) in listeners(&text) {
            if at.port() == addr.port() && overlaps(at.ip(), addr.ip()) && !inodes.contains(&inode)
            {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "address in use: another process already listens on {at} (socket inode {inode}); \
                         only this server's own workers may share the port"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The inode `/proc/net/tcp*` names a socket by.
fn socket_inode(l: &std::net::TcpListener) -> io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))?.ino())
}

/// Every listening socket of a `/proc/net/tcp` or `tcp6` table, with its
/// inode. Lines that do not parse are skipped (the header among them).
fn listeners(table: &str) -> impl Iterator<Item = (SocketAddr, u64)> + '_ {
    table.lines().filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != TCP_LISTEN {
            return None;
        }
        Some((parse_addr(f[1])?, f[9].parse().ok()?))
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel
/// prints each 32-bit word of the address in host byte order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether connections to `b` could reach a socket bound to `a`.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let a = a.to_canonical();
    let b = b.to_canonical();
    a == b || a.is_unspecified() || b.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_parse_to_listening_addresses() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n\
             1: {lo:08X}:1F90 {lo:08X}:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0 20 4 30 10 -1\n"
        );
        let got: Vec<_> = listeners(&table).collect();
        assert_eq!(got, [("127.0.0.1:8080".parse().unwrap(), 4242)]);
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 100 0 0 10 0";
        let got: Vec<_> = listeners(v6).collect();
        if cfg!(target_endian = "little") {
            assert_eq!(got, [("[::1]:8080".parse().unwrap(), 77)]);
        }
    }

    #[test]
    fn wildcards_overlap_every_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("127.0.0.1"), ip("::")));
        assert!(overlaps(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!overlaps(ip("127.0.0.1"), ip("127.0.0.2")));
    }

    #[test]
    fn a_second_reuseport_listener_of_this_process_is_found() {
        let bind = |addr: SocketAddr| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(8).unwrap();
            std::net::TcpListener::from(s)
        };
        let a = bind("127.0.0.1:0".parse().unwrap());
        let addr = a.local_addr().unwrap();
        let a2 = bind(addr);
        ensure_sole_listener(addr, &[&a, &a2]).expect("both are ours");
        let stranger = bind(addr);
        let e = ensure_sole_listener(addr, &[&a, &a2]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("address in use"), "{e}");
        drop(stranger);
        ensure_sole_listener(addr, &[&a, &a2]).expect("the stranger is gone");
    }
}
