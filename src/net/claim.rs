//! Loopback addresses for emulated modules (layer: edge). A real module has an IP of its own;
//! emulators on one host must not collide either (two of them binding 127.0.0.1:5024 was a real
//! failure in CI). Each module claims a free address in 127.0.0.0/8 for the life of the process by
//! holding a UDP socket bound to it on [`CLAIM_PORT`]: the next emulator finds it taken and moves
//! on. Nothing here knows the module.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

/// The port the claiming socket holds on each address (UDP, and rarely used: the top of the
/// registered range).
pub(crate) const CLAIM_PORT: u16 = 49151;

/// Addresses tried, in order: 127.0.0.1 … 127.0.0.254, then 127.0.1.1 …, up to 127.0.9.254 (the
/// soft AP of the module at 127.0.c.d is at 127.0.(c+10).d).
pub(crate) fn candidates() -> impl Iterator<Item = Ipv4Addr> {
    (0..10u8).flat_map(|c| (1..=254u8).map(move |d| Ipv4Addr::new(127, 0, c, d)))
}

/// The soft-AP address that goes with a claimed station address.
pub(crate) fn ap_address(station: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, d] = station.octets();
    Ipv4Addr::new(a, b, c.saturating_add(10), d)
}

/// An address held for this process.
#[derive(Debug)]
pub(crate) struct Claim {
    pub ip: Ipv4Addr,
    _socket: UdpSocket,
}

/// Claim the first free address of [`candidates`] not in `skip`.
pub(crate) fn claim(skip: &[Ipv4Addr]) -> io::Result<Claim> {
    for ip in candidates().filter(|ip| !skip.contains(ip)) {
        match UdpSocket::bind(SocketAddrV4::new(ip, CLAIM_PORT)) {
            Ok(socket) => {
                return Ok(Claim {
                    ip,
                    _socket: socket,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("claiming {ip}: {e}"))),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "every loopback address 127.0.0-9.x is claimed by another emulator",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_exclusive_and_released_on_drop() {
        let a = claim(&[]).expect("a claim");
        let b = claim(&[]).expect("a second claim");
        assert_ne!(a.ip, b.ip, "two claims, two addresses");
        let held = a.ip;
        drop(a);
        let c = claim(&[b.ip]).expect("a third claim");
        assert_ne!(c.ip, b.ip, "an address in `skip` is never claimed");
        // The address `a` held is free again, so the first free one is no later than it — unless
        // another emulator (another test) took it meanwhile, and then it is held.
        assert!(
            c.ip <= held || UdpSocket::bind(SocketAddrV4::new(held, CLAIM_PORT)).is_err(),
            "{held} was released when its claim was dropped, yet {} was claimed",
            c.ip
        );
        assert_eq!(
            ap_address(Ipv4Addr::new(127, 0, 0, 1)),
            Ipv4Addr::new(127, 0, 10, 1)
        );
    }
}
