//! The socket transitions the log shows (issue 17): each change is one line `old -> new`, as the
//! state really moved, never by way of `idle`. A logger installed for this test binary keeps the
//! socket layer's lines of the thread that asks for them.

use super::*;
use std::cell::RefCell;
use std::sync::Once;

/// Where [`Socket::transition`] logs.
const TARGET: &str = "eswifi_core::module::socket";

thread_local! {
    static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == TARGET
    }

    fn log(&self, r: &log::Record) {
        if r.target() == TARGET {
            LINES.with(|l| {
                if let Some(lines) = l.borrow_mut().as_mut() {
                    lines.push(r.args().to_string());
                }
            });
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// The transitions logged on this thread while `f` runs.
fn transitions(f: impl FnOnce()) -> Vec<String> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in the core's tests");
        log::set_max_level(log::LevelFilter::Debug);
    });
    LINES.with(|l| *l.borrow_mut() = Some(Vec::new()));
    f();
    LINES.with(|l| l.borrow_mut().take().unwrap_or_default())
}

#[test]
fn connect_accept_and_close_log_each_transition_once_as_it_is() {
    let mut h = H::joined();
    let logged = transitions(|| {
        // A client: connect, close.
        let c0 = h.connect_tcp(7000);
        assert_eq!(h.send(b"P6=0\r"), OK);
        assert_eq!(h.ops(), vec![drain(c0)]);
        // A server on socket 1: listen, a client comes and goes, its -1 is read, stop.
        let l = h.tcp_server(1, 8080, 1);
        let c = accepted(1);
        h.net(NetEvent::Accepted {
            listener: l,
            conn: c,
            peer: peer(40001),
        });
        assert_eq!(
            h.send(b"P?\r"),
            ok("0,127.0.0.9,8080,0.0.0.0,40001,1,0,3,0,0"),
            "ClientIP is the current client's"
        );
        h.net(NetEvent::Closed {
            conn: c,
            reason: CloseReason::PeerClosed,
        });
        assert_eq!(h.send(b"R0\r"), CLOSED);
        assert_eq!(
            h.send(b"P?\r"),
            ok("0,127.0.0.9,8080,0.0.0.0,40001,1,0,3,0,0"),
            "ClientIP stays the last client's while the server listens"
        );
        assert_eq!(h.send(b"P5=0\r"), OK);
        assert_eq!(
            h.send(b"P?\r"),
            ok("0,0.0.0.0,8080,0.0.0.0,40001,0,0,3,0,0"),
            "no server, no client"
        );
    });
    assert_eq!(
        logged,
        [
            "socket 0: idle -> opening (P6=1)",
            "socket 0: opening -> open (opened)",
            "socket 0: open -> idle (P6=0)",
            "socket 1: idle -> opening (P5)",
            "socket 1: opening -> listening (opened)",
            "socket 1: listening -> serving (next client)",
            "socket 1: serving -> serving-ended (peer closed)",
            "socket 1: serving-ended -> listening (-1 read)",
            "socket 1: listening -> idle (P5=0)",
        ]
    );
}

#[test]
fn a_tls_handshake_that_fails_logs_handshaking_to_idle() {
    let mut h = H::joined();
    let logged = transitions(|| {
        h.send(b"P1=3\rP3=127.0.0.1\rP4=443\r");
        assert_eq!(h.send(b"P6=1\r"), b"");
        let conn = match h.ops().as_slice() {
            [NetOp::Connect { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let peer = Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 443));
        h.net(NetEvent::Connected { conn, local, peer });
        let out = h.net(NetEvent::Data {
            conn,
            data: b"HTTP/1.0 400 Bad Request\r\n\r\n".to_vec(),
        });
        assert!(
            out.starts_with(b"\r\n[TCP SSL] Simple context, failed to connect\r\nERROR"),
            "{}",
            out.escape_ascii()
        );
    });
    assert_eq!(
        logged,
        [
            "socket 0: idle -> opening (P6=1)",
            "socket 0: opening -> tls-handshake (opened)",
            "socket 0: tls-handshake -> idle (TLS failed)",
        ]
    );
}
