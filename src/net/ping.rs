//! ICMP echo for `T0` (layer: edge). Each request is a job of the stack's bounded worker pool
//! ([`super::workers`]), since each echo may wait a second or more: an unprivileged ICMP datagram
//! socket where the OS allows it (net.ipv4.ping_group_range), else a raw socket when privileged.
//! Results go back over a channel and the loop's waker; a request the pool refuses (its queue is
//! full) is answered at once with an error, which the module answers with `Timeout` lines.

use super::workers::Pool;
use crate::net::ModuleIdx;
use eswifi_core::module::io::{NetEvent, PingError, QueryId};
use mio::Waker;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One ping request from a module.
pub(super) struct Request {
    pub module: ModuleIdx,
    pub query: QueryId,
    pub target: Ipv4Addr,
    pub count: u32,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Queue `req` on `workers`; its `PingDone` arrives through `done` and `waker`, or, if the pool
/// refuses it, in `events` at once.
pub(super) fn submit(
    req: Request,
    workers: &Pool,
    done: Sender<(ModuleIdx, NetEvent)>,
    waker: Arc<Waker>,
    events: &mut VecDeque<(ModuleIdx, NetEvent)>,
) {
    let (module, query, target) = (req.module, req.query, req.target);
    let submitted = workers.submit(move || {
        let result = run(&req);
        if let Err(e) = &result {
            log::warn!("ping {}: {e}", req.target);
        }
        let _ = done.send((
            req.module,
            NetEvent::PingDone {
                query: req.query,
                result,
            },
        ));
        let _ = waker.wake();
    });
    if let Err(e) = submitted {
        log::warn!("m{module} ping #{query} {target}: {e}");
        let result = Err(PingError::Refused(e.to_string()));
        events.push_back((module, NetEvent::PingDone { query, result }));
    }
}

/// Open an ICMP socket: datagram (unprivileged) first, raw second. Returns the socket and whether
/// replies carry an IP header (raw).
fn open() -> Result<(UdpSocket, bool), PingError> {
    let dgram = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4));
    let (sock, raw) = match dgram {
        Ok(s) => (s, false),
        Err(e1) => match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
            Ok(s) => (s, true),
            Err(e2) => {
                return Err(PingError::NoSocket(format!(
                "datagram ({e1}; see net.ipv4.ping_group_range) and raw ({e2}; needs CAP_NET_RAW)"
            )))
            }
        },
    };
    // Any fd with recv/send_to semantics will do; UdpSocket gives them without unsafe code.
    Ok((UdpSocket::from(sock), raw))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut pkt = vec![8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"eswifi-emu ping payload 32 bytes");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    pkt
}

fn run(req: &Request) -> Result<Vec<Option<Duration>>, PingError> {
    let (sock, raw) = open()?;
    let to = SockAddr::from(SocketAddrV4::new(req.target, 0));
    let to = to
        .as_socket()
        .ok_or_else(|| PingError::Io(format!("bad target {}", req.target)))?;
    let id = (std::process::id() as u16) ^ (req.query.0 as u16);
    let mut results = Vec::new();
    let mut buf = [0u8; 1500];
    for seq in 0..req.count {
        if seq > 0 {
            std::thread::sleep(req.interval);
        }
        let seq16 = seq as u16;
        let sent = Instant::now();
        if let Err(e) = sock.send_to(&echo_request(id, seq16), to) {
            log::warn!("ping {}: send: {e}", req.target);
            results.push(None);
            continue;
        }
        let deadline = sent + req.timeout;
        let mut rtt = None;
        while let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            sock.set_read_timeout(Some(left))
                .map_err(|e| PingError::Io(e.to_string()))?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PingError::Io(format!("receive: {e}"))),
            };
            let icmp = if raw {
                let ihl = ((buf[0] & 0x0f) as usize) * 4;
                &buf[ihl.min(n)..n]
            } else {
                &buf[..n]
            };
            // Echo reply with our sequence (the kernel picks the id of datagram sockets).
            let ours = icmp.len() >= 8
                && icmp[0] == 0
                && u16::from_be_bytes([icmp[6], icmp[7]]) == seq16
                && (!raw || u16::from_be_bytes([icmp[4], icmp[5]]) == id);
            if ours {
                rtt = Some(sent.elapsed());
                break;
            }
        }
        results.push(rtt);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::super::workers::test_support::{fill, WAIT};
    use super::*;
    use mio::{Events, Poll, Token};
    use std::sync::mpsc::channel;

    fn request(query: QueryId) -> Request {
        Request {
            module: 2,
            query,
            target: Ipv4Addr::LOCALHOST,
            count: 1,
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_ping_runs_on_the_pool_and_wakes_the_loop() {
        let mut poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let pool = Pool::new().expect("pool");
        let (done, results) = channel();
        let mut events = VecDeque::new();
        // The loop keeps its waker (a dropped one closes its fd, which takes it out of the poll).
        submit(
            request(QueryId(4)),
            &pool,
            done,
            Arc::clone(&waker),
            &mut events,
        );
        assert!(events.is_empty(), "{events:?}");
        // Loopback answers where ICMP sockets are allowed; elsewhere the error says why. Either way
        // exactly one answer for the request, and a wake-up for the loop.
        match results.recv_timeout(WAIT) {
            Ok((
                2,
                NetEvent::PingDone {
                    query: QueryId(4),
                    result,
                },
            )) => {
                if let Ok(rtts) = result {
                    assert_eq!(rtts.len(), 1);
                }
            }
            other => panic!("{other:?}"),
        }
        let deadline = std::time::Instant::now() + WAIT;
        let mut woken = Events::with_capacity(4);
        while !woken.iter().any(|e| e.token() == Token(0)) {
            let left = deadline.checked_duration_since(std::time::Instant::now());
            let left = left.expect("the loop is woken");
            poll.poll(&mut woken, Some(left)).expect("poll");
        }
        assert!(results.try_recv().is_err(), "a second answer");
    }

    #[test]
    fn a_ping_beyond_the_queue_is_answered_at_once_with_an_error() {
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let pool = Pool::new().expect("pool");
        let gate = fill(&pool);
        let (done, results) = channel();
        let mut events = VecDeque::new();
        submit(request(QueryId(5)), &pool, done, waker, &mut events);
        let Some((
            2,
            NetEvent::PingDone {
                query: QueryId(5),
                result: Err(PingError::Refused(why)),
            },
        )) = events.pop_front()
        else {
            panic!("no busy answer: {events:?}");
        };
        assert!(why.contains("workers are busy"), "{why}");
        assert!(events.is_empty());
        gate.open();
        assert!(results.try_recv().is_err(), "the refused ping ran");
    }

    #[test]
    fn checksum_of_echo_request_verifies() {
        let pkt = echo_request(0x1234, 7);
        assert_eq!(checksum(&pkt), 0, "a packet with its checksum sums to zero");
    }
}
