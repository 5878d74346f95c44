//! Core tests of what the firmware profile and the bus change (issue 10): exact bytes per profile,
//! `F0=2`/`MR` scanning, the SPI envelope, the closed-connection forms, and the commands added for
//! fidelity (`ZP`, `AR`, `S0`, `R4`, the stubs). Same harness as the parent module (`H`).

use super::*;

/// A module reporting `firmware`, joined to a network, with `edit` applied to its configuration.
fn with_firmware(firmware: &str, edit: impl FnOnce(&mut Config)) -> H {
    let mut cfg = Config::default();
    cfg.identity.firmware = firmware.into();
    edit(&mut cfg);
    let mut h = H::with(cfg);
    let out = h.send(b"C1=home\rC0\r");
    assert!(out.ends_with(b"[JOIN   ] home,127.0.0.1,0,0\r\nOK\r\n> "));
    h
}

/// The C6.2.1.8 no-payload OK.
const OK12: &[u8] = b"\r\n\r\n\r\nOK\r\n> ";

/// Open a UDP client on socket 0 to 127.0.0.1:9000 and return its connection id.
fn udp_client(h: &mut H, ok_reply: &[u8]) -> ConnId {
    assert_eq!(h.send(b"P1=1\rP3=127.0.0.1\rP4=9000\r"), ok_reply.repeat(3));
    assert_eq!(h.send(b"P6=1\r"), b"");
    let conn = match h.ops().as_slice() {
        [NetOp::OpenUdp { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000);
    let peer = None;
    assert_eq!(h.net(NetEvent::Connected { conn, local, peer }), ok_reply);
    conn
}

fn datagram(h: &mut H, conn: ConnId, data: &[u8]) {
    let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000);
    h.net(NetEvent::Datagram {
        conn,
        data: data.to_vec(),
        from,
    });
}

#[test]
fn default_profile_keeps_the_c3_forms() {
    let mut h = with_firmware("C3.5.2.3.STM", |_| {});
    let conn = udp_client(&mut h, OK);
    datagram(&mut h, conn, b"dgram");
    table(
        &mut h,
        &[
            (b"R0\r", ok("dgram")),
            (b"R2=0\rR0\r", [OK, OK].concat()),
            (b"P?\r", ok("1,0.0.0.0,5024,127.0.0.1,9000,0,0,8,0,0")),
            (b"PF\r", ok("0,2")),
            (b"PE\r", ok("1,1,1")),
            (
                b"PF=0,3\r",
                err0("Bad Argument", "PF", "<0=TLS/1=AWS>,<set>"),
            ),
        ],
    );
}

#[test]
fn c6_2_1_8_answers_the_12_byte_ok_the_udp_crlf_and_12_transport_fields() {
    let mut h = with_firmware("C6.2.1.8", |_| {});
    let conn = udp_client(&mut h, OK12);
    datagram(&mut h, conn, b"dgram");
    table(
        &mut h,
        &[
            (b"R0\r", b"\r\ndgram\r\n\r\nOK\r\n> ".to_vec()),
            (b"R2=0\r", OK12.to_vec()),
            (b"R0\r", OK12.to_vec()),
            (
                b"P?\r",
                ok("1,0.0.0.0,5024,127.0.0.1,9000,0,0,8,0,0,0,7200000"),
            ),
            (b"PK=1,3000\r", OK12.to_vec()),
            (
                b"P?\r",
                ok("1,0.0.0.0,5024,127.0.0.1,9000,0,0,8,0,0,1,3000"),
            ),
            // Payload replies and errors keep their forms.
            (b"CS\r", ok("1")),
            (b"P0=7\r", err0("Bad Argument", "P0", "<0-3>")),
            (b"P6=0\r", OK12.to_vec()),
        ],
    );
    assert!(matches!(h.ops().as_slice(), [NetOp::Close { .. }]));
    // TCP data has no extra CRLF: only datagrams do.
    h.send(b"P0=1\rP1=0\rP3=127.0.0.1\rP4=80\rP6=1\r");
    let conn = match h.ops().as_slice() {
        [NetOp::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
    let peer = Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80));
    assert_eq!(h.net(NetEvent::Connected { conn, local, peer }), OK12);
    h.net(NetEvent::Data {
        conn,
        data: b"stream".to_vec(),
    });
    assert_eq!(h.send(b"R0\r"), ok("stream"));
}

/// `P6=1` on a TCP client whose connect reached `ip`, as C3.5.2.x answers it.
fn connecting(ip: &str) -> Vec<u8> {
    format!("\r\n[TCP  RC] Connecting to {ip}\r\nOK\r\n> ").into_bytes()
}

#[test]
fn p6_1_names_the_address_a_tcp_connect_reached_on_c3_5_2_x_only() {
    // Firmware, TCP reply, UDP (and every no-payload) reply. C6 and the UDP start: nothing public
    // shows what they print, so they keep the bare OK of their profile.
    let rows: [(&str, Vec<u8>, &[u8]); 5] = [
        ("C3.5.2.3.STM", connecting("127.0.0.7"), OK),
        ("C3.5.2.3.BETA9", connecting("127.0.0.7"), OK),
        ("C3.5.2.5.STM", connecting("127.0.0.7"), OK),
        ("C6.2.1.7", OK.to_vec(), OK),
        ("C6.2.1.11", OK12.to_vec(), OK12),
    ];
    for (fw, tcp, ok_reply) in rows {
        let mut h = with_firmware(fw, |_| {});
        assert_eq!(h.send(b"P1=0\rP3=127.0.0.7\rP4=80\r"), ok_reply.repeat(3));
        assert_eq!(h.send(b"P6=1\r"), b"", "{fw}: waits for the network");
        let conn = match h.ops().as_slice() {
            [NetOp::Connect { conn, remote, .. }] => {
                assert_eq!(*remote, SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 7), 80));
                *conn
            }
            other => panic!("{fw}: {other:?}"),
        };
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let peer = Some(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 7), 80));
        let got = h.net(NetEvent::Connected { conn, local, peer });
        assert_eq!(
            got.escape_ascii().to_string(),
            tcp.escape_ascii().to_string(),
            "{fw}"
        );
        // MT=1 changes errors only.
        h.send(b"P6=0\rMT=1\r");
        h.ops();
        h.send(b"P6=1\r");
        let conn = match h.ops().as_slice() {
            [NetOp::Connect { conn, .. }] => *conn,
            other => panic!("{fw}: {other:?}"),
        };
        assert_eq!(
            h.net(NetEvent::Connected { conn, local, peer }),
            tcp,
            "{fw}: MT=1"
        );
        // A UDP client on socket 1.
        h.send(b"P0=1\rP1=1\rP3=127.0.0.7\rP4=9000\r");
        assert_eq!(h.send(b"P6=1\r"), b"");
        let conn = match h.ops().as_slice() {
            [NetOp::OpenUdp { conn, .. }] => *conn,
            other => panic!("{fw}: {other:?}"),
        };
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000);
        let got = h.net(NetEvent::Connected {
            conn,
            local,
            peer: None,
        });
        assert_eq!(got, ok_reply, "{fw}: UDP");
    }
}

#[test]
fn the_connect_line_names_the_peer_the_network_reached() {
    // The address comes from the connection, as the driver reports it (here it differs from P3 on
    // purpose), never from the settings.
    let mut h = H::joined();
    h.send(b"P1=0\rP3=127.0.0.1\rP4=80\rP6=1\r");
    let conn = match h.ops().as_slice() {
        [NetOp::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
    let peer = Some(SocketAddrV4::new(Ipv4Addr::new(10, 20, 30, 40), 80));
    assert_eq!(
        h.net(NetEvent::Connected { conn, local, peer }),
        connecting("10.20.30.40")
    );
}

#[test]
fn c6_has_set_3_rewritable_and_the_aws_default_there() {
    for fw in ["C6.2.1.7", "C6.2.1.11"] {
        let mut h = with_firmware(fw, |_| {});
        let ok_reply = if fw == "C6.2.1.7" { OK } else { OK12 };
        assert_eq!(h.send(b"PF\r"), ok("0,3"), "{fw}");
        assert_eq!(h.send(b"PE\r"), ok("1,1,1,1"), "{fw}");
        assert_eq!(h.send(b"PF=0,3\r"), ok_reply, "{fw}");
        assert_eq!(h.program(3, 0, PEM_CERT, true), ok_reply, "{fw}");
        // Re-writable: other bytes replace the item, and it still reads as available.
        let other = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert_eq!(h.program(3, 0, other, true), ok_reply, "{fw}");
        assert_eq!(h.send(b"PE=3\r"), ok("1,1,1"), "{fw}");
        assert_eq!(
            h.send(b"P?\r"),
            ok("0,0.0.0.0,5024,0.0.0.0,5025,0,0,8,0,0,0,7200000"),
            "{fw}"
        );
        // ZR restores the AWS default of the profile.
        h.send(b"PF=1,0\r");
        h.send(b"ZR\r");
        assert_eq!(h.send(b"PF\r"), ok("0,3"), "{fw}");
    }
}

#[test]
fn the_banner_follows_the_profile_and_the_identity_setting() {
    for fw in ["C3.5.2.3.STM", "C6.2.1.11"] {
        let mut cfg = Config::default();
        cfg.identity.firmware = fw.into();
        let out = module(&cfg).take_serial();
        let want = [
            system::banner(Profile::from_firmware(fw).unwrap()),
            b"\r\n> ",
        ]
        .concat();
        assert_eq!(out, want, "{fw}");
        assert!(out.ends_with(b"Copyright (c)2011-2020\r\n> "));
    }
}

#[test]
fn f0_2_gives_one_access_point_per_reply_and_mr_the_next_until_ok() {
    let mut cfg = configured();
    cfg.identity.firmware = "C3.5.2.5.STM".into();
    let mut h = H::with(cfg);
    let home = "#001,\"home\",08:86:3B:2B:7E:2E,-51,72.2,Infrastructure,WPA2 AES,2.4GHz,1";
    let cafe = "#002,\"cafe\",02:11:22:33:44:55,-70,54.0,Infrastructure,Open,2.4GHz,11";
    let part = |l: &str| format!("\r\n[SOMA]{l}[EOMA]\r\n> ").into_bytes();
    table(
        &mut h,
        &[
            (b"F0=2\r", part(home)),
            (b"MR\r", part(cafe)),
            (b"MR\r", OK.to_vec()),
            // The list is done: MR is the event queue again.
            (b"MR\r", ok("[SOMA][EOMA]")),
            // Plain F0 still works, and a new F0=2 starts over.
            (b"F0\r", ok(&format!("{home}\r\n{cafe}"))),
            (b"F0=2\r", part(home)),
            (b"F0=2\r", part(home)),
            (b"MR\r", part(cafe)),
            (b"MR\r", OK.to_vec()),
            (b"F0=3\r", err0("Too Many Arguments", "F0", "")),
        ],
    );
    // With no access point in range the first reply already ends the list.
    let mut cfg = Config::default();
    cfg.identity.firmware = "C3.5.2.5.STM".into();
    cfg.access_points = vec![AccessPoint {
        ssid: "far".into(),
        security: Security::Open,
        password: String::new(),
        bssid: "02:00:00:00:00:09".into(),
        rssi: -90,
        channel: 3,
    }];
    let mut h = H::with(cfg);
    assert_eq!(
        h.send(b"F0=2\rMR\rMR\r"),
        [
            part("#001,\"far\",02:00:00:00:00:09,-90,54.0,Infrastructure,Open,2.4GHz,3"),
            OK.to_vec(),
            ok("[SOMA][EOMA]")
        ]
        .concat()
    );
}

#[test]
fn f0_2_is_refused_before_c3_5_2_5_and_waits_the_scan_time() {
    let mut h = H::new();
    assert_eq!(h.send(b"F0=2\r"), err0("Too Many Arguments", "F0", ""));
    let mut cfg = configured();
    cfg.identity.firmware = "C3.5.2.5.STM".into();
    cfg.timing.scan_ms = 500;
    let mut h = H::with(cfg);
    assert_eq!(h.send(b"F0=2\r"), b"");
    assert_eq!(h.advance(499), b"");
    assert!(h.advance(1).starts_with(b"\r\n[SOMA]#001,\"home\""));
    // ZR forgets an unfinished list.
    h.send(b"ZR\r");
    assert_eq!(h.send(b"MR\r"), ok("[SOMA][EOMA]"));
}

/// A reply as the SPI bus carries it: padded to whole 16-bit words with 0x15.
fn spi(mut v: Vec<u8>) -> Vec<u8> {
    if v.len() % 2 == 1 {
        v.push(0x15);
    }
    v
}

#[test]
fn spi_bus_pads_odd_replies_boots_with_the_cursor_and_delivers_events_by_mr() {
    let mut cfg = Config::default();
    cfg.module.bus = crate::config::Bus::Spi;
    // Even with events = "uart" configured, SPI has only MR.
    cfg.module.events = crate::config::EventMode::Uart;
    let mut m = module(&cfg);
    assert_eq!(
        m.take_serial(),
        b"\x15\x15\r\n> ",
        "the 6-byte cursor, no banner"
    );
    let mut h = H::with(cfg);
    table(
        &mut h,
        &[
            (b"C1=home\r", OK.to_vec()),                        // 10 bytes: even
            (b"CS\r", b"\r\n0\r\nOK\r\n> \x15".to_vec()),       // 11: padded
            (b"B?\r", b"\r\nSPI,0,0\r\nOK\r\n> \x15".to_vec()), // 17: padded
            (b"C0\r", ok("[JOIN   ] home,127.0.0.1,0,0")),      // 38: even
        ],
    );
    // The host pads an odd command and an odd payload with LF: both are ignored.
    assert_eq!(
        h.send(b"P?\r\n"),
        spi(ok("0,0.0.0.0,5024,0.0.0.0,5025,0,0,8,0,0"))
    );
    let l = h.tcp_server(0, 9003, 1);
    let accepted = h.net(NetEvent::Accepted {
        listener: l,
        conn: accepted(1),
        peer: peer(5),
    });
    assert_eq!(accepted, b"", "nothing unsolicited on SPI");
    assert_eq!(
        h.send(b"MR\r"),
        b"\r\n[SOMA][TCP SVR] Accepted 127.0.0.9:9003[EOMA]\r\nOK\r\n> \x15" // 55 + pad
    );
    assert_eq!(h.send(b"S3=3\rabc\n"), b"\r\n3\r\nOK\r\n> \x15");
    assert!(matches!(h.ops().as_slice(), [NetOp::Send { data, .. }] if data == b"abc"));
    assert_eq!(
        h.send(b"ZR\r"),
        [ok("[MODULE ] Resetting..."), b"\x15\x15\r\n> ".to_vec()].concat()
    );
    assert_eq!(
        h.send(b"?\r"),
        b"\r\n\r\nERROR: Unknown Command\r\n> ",
        "no help on SPI firmware"
    );
}

#[test]
fn spi_host_padding_with_0x15_is_ignored_but_payload_bytes_count() {
    let mut cfg = Config::default();
    cfg.module.bus = crate::config::Bus::Spi;
    let mut h = H::with(cfg);
    // The datasheet's padding: the 0x15 after each odd command is no part of the next one.
    let id = ok(
        "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi",
    );
    assert_eq!(h.send(b"I?\r\x15"), spi(id));
    assert_eq!(h.send(b"CS\r\x15"), spi(ok("0")));
    assert_eq!(h.send(b"C1=home\r\x15C0\r\x15").len(), 10 + 38);
    let conn = h.connect_tcp_with(7000, &spi(CONNECTING.to_vec()));
    // In a payload 0x15 is data, the pad after it is not.
    assert_eq!(h.send(b"S3=0003\r\x15a\x15\x15"), spi(ok("3")));
    assert!(
        matches!(h.ops().as_slice(), [NetOp::Send { conn: c, data, .. }] if *c == conn && data == b"\x15a\x15")
    );
    assert_eq!(h.send(b"P6=0\r\x15"), OK);
}

#[test]
fn spi_boot_messages_wait_for_mr() {
    let mut cfg = Config::default();
    cfg.module.bus = crate::config::Bus::Spi;
    let mut h = H::with(cfg);
    h.send(b"C1=home\rCC=1\rZ1\r");
    let req = match h.m.poll_store() {
        Some(StoreOp::Settings { req, .. }) => req,
        other => panic!("{other:?}"),
    };
    h.m.handle_stored(req, Ok(()), h.now);
    assert_eq!(h.m.take_serial(), OK);
    // Auto-join at boot: the cursor alone, the join line fetched with MR.
    assert_eq!(
        h.send(b"ZR\r"),
        [ok("[MODULE ] Resetting..."), b"\x15\x15\r\n> ".to_vec()].concat()
    );
    assert_eq!(
        h.send(b"MR\r"),
        ok("[SOMA][JOIN   ] home,127.0.0.1,0,0[EOMA]")
    );
    assert_eq!(h.send(b"CS\r"), b"\r\n1\r\nOK\r\n> \x15");
}

#[test]
fn closed_connection_reply_forms() {
    use crate::config::ClosedForm;
    let rows: [(ClosedForm, &[u8], &[u8]); 3] = [
        (
            ClosedForm::Error,
            b"\r\n-1\r\nERROR\r\n> ",
            b"\r\n-1\r\nERROR\r\n> ",
        ),
        (
            ClosedForm::Usage,
            b"\r\n-1\r\nERROR: Unknown Error\r\nUsage: R0 \r\n> ",
            b"\r\n-1\r\nERROR: Unknown Error\r\nUsage: S3 <1-1460>\r\n> ",
        ),
        (ClosedForm::Ok, b"\r\n-1\r\nOK\r\n> ", b"\r\n-1\r\nOK\r\n> "),
    ];
    for (form, r0, s3) in rows {
        let mut cfg = Config::default();
        cfg.quirks.closed_reply = form;
        let mut h = H::with(cfg);
        h.send(b"C1=home\rC0\r");
        let conn = h.connect_tcp(80);
        h.net(NetEvent::Closed {
            conn,
            reason: CloseReason::PeerClosed,
        });
        assert_eq!(h.send(b"R0\r"), r0, "{form:?}");
        assert_eq!(h.send(b"S3=1\rx"), s3, "{form:?}");
        // MT=1 makes every error bare, this one too.
        h.send(b"MT=1\r");
        let bare: &[u8] = match form {
            ClosedForm::Ok => b"\r\n-1\r\nOK\r\n> ",
            _ => b"\r\n-1\r\nERROR\r\n> ",
        };
        assert_eq!(h.send(b"R0\r"), bare, "{form:?}");
    }
}

#[test]
fn failed_lookup_names_the_reason_code() {
    let mut h = H::new();
    assert_eq!(
        h.send(b"D0=example.test\r"),
        b"\r\n[DNS  LU] Host not found example.test:4\r\nERROR: Unknown Error\r\nUsage: D0 <host name>\r\n> "
    );
}

#[test]
fn power_management_is_accepted_and_reported_by_z_query() {
    let mut h = H::new();
    let z = |ps: u8, radio: u8, cur: u32, prev: u32| {
        ok(&format!(
            "1,12345678,0483,5740,C4:7F:51:01:12:31,127.0.10.1,{ps},{radio},{cur},{prev},Inventek eS-WiFi"
        ))
    };
    table(
        &mut h,
        &[
            (b"Z?\r", z(0, 1, 0, 0)),
            // CMSIS: PowerControl(FULL), then what ARM_WIFI_LP_TIMER sets; Mongoose: ZP=0.
            (b"ZP=1,0\r", OK.to_vec()),
            (b"ZP=1,1\r", OK.to_vec()),
            (b"ZP=2,100\r", OK.to_vec()),
            (b"ZP=2,300\r", OK.to_vec()),
            (b"ZP=6,1000\r", OK.to_vec()),
            (b"ZP=3,0\r", OK.to_vec()),
            (b"Z?\r", z(1, 0, 300, 100)),
            (b"ZP=0\r", OK.to_vec()),
            (b"ZP=4\r", OK.to_vec()),
            (b"ZP=5\r", OK.to_vec()),
            (b"Z?\r", z(0, 1, 300, 100)),
            (
                b"ZP=1\r",
                err0(
                    "Insufficient Arguments",
                    "ZP",
                    "<0=Normal/1=PS/2=Beacon/3=Radio/4=Radio reset/5=Stop/6=Sleep>[,<value>]",
                ),
            ),
            (
                b"ZP=9\r",
                err0(
                    "Bad Argument",
                    "ZP",
                    "<0=Normal/1=PS/2=Beacon/3=Radio/4=Radio reset/5=Stop/6=Sleep>[,<value>]",
                ),
            ),
        ],
    );
    h.send(b"MT=1\r");
    assert_eq!(h.send(b"ZP=0,1\r"), ERR1);
}

#[test]
fn ar_lists_the_soft_ap_stations_as_mongoose_parses_them() {
    let mut h = H::new();
    // Not running: empty, never an error (Mongoose would stop polling for good).
    assert_eq!(h.send(b"AR\r"), OK);
    h.send(b"AS=0,lab\rZ6=127.0.10.1\rZP=0\rAD\r");
    assert_eq!(h.send(b"AR\r"), OK);
    let l = h.tcp_server_on(0, 9100, Ipv4Addr::new(127, 0, 10, 1));
    for (n, ip) in [(1u64, [127, 0, 0, 7]), (2, [127, 0, 0, 8])] {
        let peer = SocketAddrV4::new(Ipv4Addr::from(ip), 40000 + n as u16);
        h.net(NetEvent::Accepted {
            listener: l,
            conn: accepted(n),
            peer,
        });
    }
    assert_eq!(
        h.send(b"AR\r"),
        ok("1,02:00:7F:00:00:07,-40\r\n2,02:00:7F:00:00:08,-40\r\n")
    );
    h.send(b"AE\r");
    assert_eq!(h.send(b"AR\r"), OK);
}

impl H {
    /// A TCP server on socket `sock` listening on `ip:port` (backlog 3).
    fn tcp_server_on(&mut self, sock: u8, port: u16, ip: Ipv4Addr) -> ConnId {
        self.send(format!("P0={sock}\rP1=0\rP2={port}\rP8=3\r").as_bytes());
        assert_eq!(self.send(b"P5=1\r"), b"");
        let listener = match self.ops().as_slice() {
            [NetOp::Listen { conn, local, .. }] => {
                assert_eq!(*local, SocketAddrV4::new(ip, port));
                *conn
            }
            other => panic!("{other:?}"),
        };
        let local = SocketAddrV4::new(ip, port);
        assert_eq!(
            self.net(NetEvent::Connected {
                conn: listener,
                local,
                peer: None,
            }),
            OK
        );
        listener
    }
}

#[test]
fn s0_sends_s1_bytes_or_what_came_within_s2() {
    let mut h = H::joined();
    let conn = h.connect_tcp(80);
    let sent = |h: &mut H| -> Vec<u8> {
        h.ops()
            .into_iter()
            .map(|op| match op {
                NetOp::Send { data, seq, .. } => {
                    h.net(NetEvent::Sent { conn, seq });
                    data
                }
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .concat()
    };
    // S1 bytes: sent at once, whatever they contain (the CR and "R0" are data here).
    assert_eq!(h.send(b"S1=6\rS2=1000\r"), OK.repeat(2));
    assert_eq!(h.send(b"S0\rab\rR0\r"), ok("6"));
    assert_eq!(sent(&mut h), b"ab\rR0\r");
    // Fewer: they go when S2 runs out, counted from the header, not from the last byte.
    assert_eq!(h.send(b"S0\rxy"), b"");
    assert_eq!(h.advance(600), b"");
    assert_eq!(h.send(b"z"), b"");
    assert_eq!(h.advance(399), b"");
    assert_eq!(h.advance(1), ok("3"));
    assert_eq!(sent(&mut h), b"xyz");
    // Nothing at all: nothing is sent.
    assert_eq!(h.send(b"S0\r"), b"");
    assert_eq!(h.advance(1000), ok("0"));
    assert_eq!(sent(&mut h), b"");
    assert!(
        h.send(b"I?\r").starts_with(b"\r\nISM43362"),
        "commands again"
    );
    // On a closed connection: -1 once the bytes are in.
    h.net(NetEvent::Closed {
        conn,
        reason: CloseReason::PeerClosed,
    });
    assert_eq!(h.send(b"S0\rabcdef"), CLOSED);
}

#[test]
fn r4_prefixes_the_data_with_its_length() {
    let mut h = H::joined();
    let conn = h.connect_tcp(80);
    h.net(NetEvent::Data {
        conn,
        data: b"hello".to_vec(),
    });
    table(
        &mut h,
        &[
            (b"R4\r", ok("0005hello")),
            (b"R2=0\rR4\r", [OK.to_vec(), ok("0000")].concat()),
        ],
    );
    h.send(b"R2=100\r");
    assert_eq!(h.send(b"R4\r"), b"");
    assert_eq!(h.advance(100), ok("0000"));
    h.net(NetEvent::Closed {
        conn,
        reason: CloseReason::PeerClosed,
    });
    assert_eq!(h.send(b"R4\r"), CLOSED);
}

#[test]
fn stubs_answer_plausibly_instead_of_unknown_command() {
    let mut h = H::new();
    table(
        &mut h,
        &[
            (b"MF\r", OK.to_vec()),
            (b"MJ=net,pass\r", OK.to_vec()),
            (b"MA\rMD\rH0=hello\rHR\rHT\rHD\rDB=3\r", OK.repeat(7)),
            (b"IC\r", ok("0")),
            (b"IC=mqtt.example:8883\r", ok("1")),
            (b"IC\r", ok("1")),
            (b"CE=1\r", OK.to_vec()),
            (b"CF=1\rCJ=1,224.0.0.251\rCM\rCL=10\rCX=0\rCZ=1\rCT=4\r", OK.repeat(7)),
            (b"CV\r", ok("0")),
            (b"CW=1\r", b"\r\n[WPS    ] Failed\r\nERROR: Unknown Error\r\nUsage: CW <0=PIN/1=Push button>\r\n> ".to_vec()),
            (b"C1=home\rC2=secret123\rC3=3\rC0\r", [OK.repeat(3), ok("[JOIN   ] home,127.0.0.1,0,0")].concat()),
            (b"CV\r", ok("72")),
            (b"C?\r", ok("home,secret123,3,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,5,0,1,US,1")),
            (b"CY=1\r", OK.to_vec()),
            (b"C?\r", ok("home,*RESTRICTED*,3,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,5,0,1,US,1")),
            (b"G?\r", OK.to_vec()),
            (b"G4=1,4\rG3=1,4,1\rG4=2,2\r", OK.repeat(3)),
            (b"G2=1,4\r", ok("1")),
            (b"G2=2,2\r", ok("0")),
            (b"G2=9,3\r", ok("0")),
            (b"G?\r", ok("1,4,1\r\n2,2,0")),
            (b"G5=1,50\r", OK.to_vec()),
            (b"WL=?\r", ok("4,3,1")),
            (b"WL=1,2,0\r", OK.to_vec()),
            (b"WL=?\r", ok("1,2,0")),
            (b"WL=#\r", ok("4,3,1")),
            (b"SF=3\rPL=7\r", OK.repeat(2)),
            (b"SF=6\r", err0("Bad Argument", "SF", "<0-5>")),
        ],
    );
}

#[test]
fn gt_is_milliseconds_since_power_up_then_utc_seconds_with_a_network() {
    let cfg = Config::default();
    let t0 = Instant::now();
    let mut m = Module::new(&cfg, t0, Duration::from_secs(1_700_000_000));
    m.take_serial();
    m.handle_serial(b"GT\r", t0 + Duration::from_millis(1234));
    assert_eq!(m.take_serial(), ok("1234"));
    m.handle_serial(b"C1=x\rC0\r", t0);
    m.take_serial();
    m.handle_serial(b"GT\r", t0 + Duration::from_secs(5));
    assert_eq!(m.take_serial(), ok("1700000005"));
}

#[test]
fn help_lists_every_command() {
    let mut h = H::new();
    let out = h.send(b"?\r");
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with(
        "\r\nConsole Commands:\r\n? - Show this help\r\n$$$ - Enter command mode\r\n"
    ));
    assert!(text.ends_with("\r\nS? - Show write settings\r\nOK\r\n> "));
    for m in Mnemonic::ALL {
        assert!(text.contains(&format!("\r\n{} - ", m.text())), "{m:?}");
    }
}
