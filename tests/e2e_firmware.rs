//! End-to-end tests of firmware fidelity (issue 10): the real binary on a pty, exact bytes.
//!
//! - `F0=2` scanning on C3.5.2.5, read back the way ST's `es_wifi.c` does it;
//! - each firmware profile's no-payload OK, `P?` and UDP `R0` forms;
//! - the SPI bus framing (boot cursor, 0x15 padding, the host's 0x0A padding, events by `MR`);
//! - the commands added (`ZP`, `AR`, `S0`, `R4`, stubs), `Z?` with `Z6`, the `D0` failure code and
//!   the closed-connection forms;
//! - Zephyr's stray byte after every payload, in a write of its own, 100 times;
//! - Mbed's UDP clients (no `P2`; `P4` = local port before `P6=1`), two and four at once;
//! - `P6=1` for TCP, UDP and TLS on each profile and bus, read the way each host driver of spec §6
//!   classifies a reply (issue 20), and an SPI host padding its commands with 0x15.

use eswifi_test_support::harness::*;
use eswifi_test_support::tls::{pki, server_config, TlsServer, Versions};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(20);

/// The 12-byte no-payload OK of C6.2.1.8 and newer.
const OK12: &[u8] = b"\r\n\r\n\r\nOK\r\n> ";

/// Join with whatever no-payload OK the profile uses.
fn join_with(emu: &mut Emu, ok_form: &[u8]) {
    emu.expect(b"C1=eswifi-e2e\r", ok_form);
    emu.expect(b"C2=secret123\r", ok_form);
    emu.expect(b"C3=3\r", ok_form);
    emu.expect(b"C0\r", &ok("[JOIN   ] eswifi-e2e,127.0.0.1,0,0"));
}

/// R0 until it returns something other than an empty OK (`empty`), at most `rounds` times.
fn r0_data(emu: &mut Emu, req: &[u8], empty: &[u8], rounds: usize) -> Vec<u8> {
    let mut reply = emu.cmd(req);
    for _ in 0..rounds {
        if reply != empty {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        reply = emu.cmd(req);
    }
    reply
}

// ---- F0=2, as ST's es_wifi.c reads it --------------------------------------------------------------

const THREE_APS: &str = r#"
[identity]
firmware = "C3.5.2.5.STM"

[[access_point]]
ssid = "HomeNet"
security = "wpa2-aes"
password = "correct horse"
bssid = "08:86:3B:2B:7E:2E"
rssi = -51
channel = 1

[[access_point]]
ssid = "CoffeeShop"
security = "open"
rssi = -70
channel = 11

[[access_point]]
ssid = "Lab 5G"
security = "wpa2-tkip"
bssid = "02:00:00:00:00:05"
rssi = -60
channel = 36
"#;

/// `ES_WIFI_SecurityType_t`, as ST's `ParseSecurity` picks it by substring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StSecurity {
    Open,
    Wep,
    WpaWpa2,
    Wpa2Tkip,
    Wpa2,
    Wpa,
    Unknown,
}

/// `ES_WIFI_AP_t`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StAp {
    ssid: String,
    mac: [u8; 6],
    rssi: i32,
    security: StSecurity,
    channel: i32,
}

/// ST's `ParseNumber`: an optional minus, then digits; stops at anything else.
fn st_number(s: &str) -> i32 {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i32, |v, d| v * 10 + (d - b'0') as i32);
    if neg {
        -v
    } else {
        v
    }
}

/// `AT_ParseSingleAP`: `strtok` on `,` from offset 2 (empty tokens skipped), fields by position.
fn st_parse_single_ap(reply: &[u8]) -> StAp {
    let text = String::from_utf8_lossy(&reply[2..]).into_owned();
    let mut ap = StAp {
        ssid: String::new(),
        mac: [0; 6],
        rssi: 0,
        security: StSecurity::Unknown,
        channel: 0,
    };
    for (num, tok) in text.split(',').filter(|t| !t.is_empty()).enumerate() {
        match num {
            1 => ap.ssid = tok[1..tok.len() - 1].to_string(),
            2 => {
                for (i, h) in tok.split(':').take(6).enumerate() {
                    ap.mac[i] = u8::from_str_radix(h, 16).unwrap_or(0);
                }
            }
            3 => ap.rssi = st_number(tok),
            6 => {
                ap.security = if tok.contains("Open") {
                    StSecurity::Open
                } else if tok.contains("WEP") {
                    StSecurity::Wep
                } else if tok.contains("WPA WPA2") {
                    StSecurity::WpaWpa2
                } else if tok.contains("WPA2 TKIP") {
                    StSecurity::Wpa2Tkip
                } else if tok.contains("WPA2") {
                    StSecurity::Wpa2
                } else if tok.contains("WPA") {
                    StSecurity::Wpa
                } else {
                    StSecurity::Unknown
                }
            }
            8 => ap.channel = st_number(tok),
            _ => {}
        }
    }
    ap
}

/// `ES_WIFI_ListAccessPoints` for FW ≥ 3.5.2.5: `F0=2`, then one receive per AP (a UART shim
/// reads up to the prompt); a reply containing `\r\nOK\r\n> ` ends the list, `\r\nERROR` fails it;
/// anything else is one AP, and `MR` asks for the next. Returns the APs and every reply.
fn st_list_access_points(emu: &mut Emu) -> (Vec<StAp>, Vec<Vec<u8>>) {
    let mut aps = Vec::new();
    let mut replies = Vec::new();
    emu.write(b"F0=2\r");
    for _ in 0..20 {
        let reply = emu.read_until_prompt(SECS);
        replies.push(reply.clone());
        let has = |n: &[u8]| reply.windows(n.len()).any(|w| w == n);
        if has(b"\r\nOK\r\n> ") {
            return (aps, replies);
        }
        assert!(!has(b"\r\nERROR"), "F0=2 failed: \"{}\"", esc(&reply));
        aps.push(st_parse_single_ap(&reply));
        emu.write(b"MR\r");
    }
    panic!("the list did not end after 20 replies");
}

#[test]
fn f0_2_scan_one_by_one_as_st_es_wifi_parses_it() {
    let mut emu = Emu::start_with(Some(THREE_APS), &[]);
    emu.expect_ok(
        b"I?\r",
        b"ISM43362-M3G-L44-UART,C3.5.2.5.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi",
    );
    let (aps, replies) = st_list_access_points(&mut emu);
    let part = |l: &str| format!("\r\n[SOMA]{l}[EOMA]\r\n> ").into_bytes();
    let want_replies = [
        part("#001,\"HomeNet\",08:86:3B:2B:7E:2E,-51,72.2,Infrastructure,WPA2 AES,2.4GHz,1"),
        part("#002,\"CoffeeShop\",02:00:00:00:00:01,-70,54.0,Infrastructure,Open,2.4GHz,11"),
        part("#003,\"Lab 5G\",02:00:00:00:00:05,-60,72.2,Infrastructure,WPA2 TKIP,5GHz,36"),
        OK.to_vec(),
    ];
    assert_eq!(
        replies.iter().map(|r| esc(r)).collect::<Vec<_>>(),
        want_replies.iter().map(|r| esc(r)).collect::<Vec<_>>()
    );
    let ap = |ssid: &str, mac, rssi, security, channel| StAp {
        ssid: ssid.into(),
        mac,
        rssi,
        security,
        channel,
    };
    assert_eq!(
        aps,
        vec![
            ap(
                "HomeNet",
                [0x08, 0x86, 0x3B, 0x2B, 0x7E, 0x2E],
                -51,
                StSecurity::Wpa2,
                1
            ),
            ap("CoffeeShop", [2, 0, 0, 0, 0, 1], -70, StSecurity::Open, 11),
            ap("Lab 5G", [2, 0, 0, 0, 0, 5], -60, StSecurity::Wpa2Tkip, 36),
        ]
    );
    // The list is done: MR is the (empty) event queue again; plain F0 still answers in one reply.
    emu.expect_ok(b"MR\r", b"[SOMA][EOMA]");
    let all = emu.cmd(b"F0\r");
    assert!(all.starts_with(b"\r\n#001,\"HomeNet\""), "{}", esc(&all));
    // The default firmware (C3.5.2.3) has no F0=2, so ST and Mbed never send it there.
    let mut old = Emu::start();
    old.expect(b"F0=2\r", &err0("Too Many Arguments", "F0", ""));
    emu.stop();
    old.stop();
}

// ---- firmware profiles ---------------------------------------------------------------------------

/// Firmware, no-payload OK, `P?` after `P6=1` (the fields after the remote port), what follows a
/// UDP datagram before `\r\nOK`, `PF`, `PE`.
type Profile = (
    &'static str,
    &'static [u8],
    &'static str,
    &'static [u8],
    &'static str,
    &'static str,
);

#[test]
fn each_profile_answers_its_ok_transport_and_udp_read_forms() {
    let rows: [Profile; 3] = [
        ("C3.5.2.3.STM", OK, "0,0,8,0,0", b"", "0,2", "1,1,1"),
        ("C6.2.1.7", OK, "0,0,8,0,0,0,7200000", b"", "0,3", "1,1,1,1"),
        (
            "C6.2.1.8",
            OK12,
            "0,0,8,0,0,0,7200000",
            b"\r\n",
            "0,3",
            "1,1,1,1",
        ),
    ];
    for (fw, ok_form, pq_tail, extra, pf, pe) in rows {
        let server = Server::udp_echo();
        let cfg = format!("[identity]\nfirmware = \"{fw}\"\n");
        let mut emu = Emu::start_with(Some(&cfg), &[]);
        assert!(emu.boot.ends_with(BANNER_END), "{fw}: banner");
        emu.expect_ok(
            b"I?\r",
            format!(
                "ISM43362-M3G-L44-UART,{fw},v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi"
            )
            .as_bytes(),
        );
        join_with(&mut emu, ok_form);
        let port = server.port();
        for req in [
            "P1=1\r".to_string(),
            "P3=127.0.0.1\r".into(),
            format!("P4={port}\r"),
            "R2=2000\r".into(),
            "P6=1\r".into(),
        ] {
            emu.expect(req.as_bytes(), ok_form);
        }
        emu.expect_ok(
            b"P?\r",
            format!("1,0.0.0.0,5024,127.0.0.1,{port},{pq_tail}").as_bytes(),
        );
        emu.expect(&s3(b"dgram"), &ok("5"));
        let got = r0_data(&mut emu, b"R0\r", ok_form, 20);
        let want = [b"\r\ndgram".as_slice(), extra, b"\r\nOK\r\n> "].concat();
        assert_bytes(&got, &want, &format!("{fw}: UDP R0"));
        emu.expect(b"R2=0\r", ok_form);
        emu.expect(b"R0\r", ok_form);
        emu.expect(b"P6=0\r", ok_form);
        emu.expect_ok(b"PF\r", pf.as_bytes());
        emu.expect_ok(b"PE\r", pe.as_bytes());
        emu.stop();
    }
}

// ---- P6=1 as each host driver reads it ------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What an SPI host keeps of a reply: trailing 0x15 pads dropped (spec §2.7).
fn unpadded(r: &[u8]) -> &[u8] {
    let end = r.iter().rposition(|&b| b != 0x15).map_or(0, |i| i + 1);
    &r[..end]
}

/// ST `es_wifi.c`, `AT_ExecuteCommand`: success when `\r\nOK\r\n> ` occurs anywhere.
fn st_ok(r: &[u8]) -> bool {
    find(unpadded(r), b"\r\nOK\r\n> ").is_some()
}

/// CMSIS `WiFi_ISM43362.c`, `SPI_SendReceive`: trailing 0x15 dropped, then code 0 when more than 4
/// bytes came and the last 8 are `\r\nOK\r\n> `.
fn cmsis_ok(r: &[u8]) -> bool {
    let r = unpadded(r);
    r.len() > 4 && r.ends_with(b"\r\nOK\r\n> ")
}

/// Mbed `ISM43362::check_response` on its ATParser: `recv("OK\r\n")` drops each line that is not
/// `OK` (its buffer restarts at every CR or LF), then `recv(">%[^\n]")` wants a line starting with
/// `>` and one more character.
fn mbed_ok(r: &[u8]) -> bool {
    let mut start = 0;
    let mut after_ok = None;
    for (j, &c) in r.iter().enumerate() {
        if c == b'\r' || c == b'\n' {
            if &r[start..j] == b"OK" {
                after_ok = Some(j + 1);
                break;
            }
            start = j + 1;
        }
    }
    let Some(from) = after_ok else {
        return false;
    };
    (from..r.len()).any(|p| {
        r[p] == b'>'
            && (p == from || matches!(r[p - 1], b'\r' | b'\n'))
            && r.get(p + 1).is_some_and(|&c| c != b'\n')
    })
}

/// Zephyr `eswifi_at_cmd_rsp`: starts with CR LF, and `\r\nOK\r\n>` at an offset from 1 to
/// length - 8.
fn zephyr_ok(r: &[u8]) -> bool {
    let r = unpadded(r);
    r.starts_with(b"\r\n")
        && r.len() >= 9
        && (1..=r.len() - 8).any(|i| r[i..].starts_with(b"\r\nOK\r\n>"))
}

/// Mongoose `ism43xxx_core.c`: the first two bytes dropped, lines split at CR LF until only `> `
/// is left; the last line (empty ones count) is the status, success when it is `OK`.
fn mongoose_ok(r: &[u8]) -> bool {
    let Some(mut s) = unpadded(r).get(2..) else {
        return false;
    };
    let mut last: &[u8] = b"";
    loop {
        match find(s, b"\r\n") {
            Some(i) => {
                last = &s[..i];
                s = &s[i + 2..];
            }
            None => return s == b"> " && last == b"OK",
        }
    }
}

/// The Rust `es-wifi-driver` (lulf, from drogue-device; `parser::connected`): `\r\n[TCP  RC]
/// Connecting to `, anything up to CR LF, then `OK\r\n> `. It takes nothing else as a connect.
fn es_wifi_driver_connected(r: &[u8]) -> bool {
    let Some(rest) = unpadded(r).strip_prefix(b"\r\n[TCP  RC] Connecting to ".as_slice()) else {
        return false;
    };
    find(rest, b"\r\n").is_some_and(|i| rest[i + 2..].starts_with(b"OK\r\n> "))
}

#[test]
fn driver_models_read_the_forms_they_were_written_for() {
    let err = b"\r\n[TCP  RC] Failed to connect\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";
    for r in [OK, OK12, CONNECTING, b"\r\n-67\r\nOK\r\n> \x15".as_slice()] {
        let all = [
            st_ok(r),
            cmsis_ok(r),
            mbed_ok(r),
            zephyr_ok(r),
            mongoose_ok(r),
        ];
        assert_eq!(all, [true; 5], "{}", esc(r));
    }
    for r in [err.as_slice(), CLOSED, ERR1, b"\r\n-1\r\nOK\r\n".as_slice()] {
        let all = [
            st_ok(r),
            cmsis_ok(r),
            mbed_ok(r),
            zephyr_ok(r),
            mongoose_ok(r),
        ];
        assert_eq!(all, [false; 5], "{}", esc(r));
    }
    assert!(es_wifi_driver_connected(CONNECTING));
    assert!(!es_wifi_driver_connected(OK), "the bare OK it rejects");
}

#[test]
fn p6_1_per_profile_and_protocol_as_each_host_driver_reads_it() {
    let tcp = Server::tcp_echo();
    let udp = Server::udp_echo();
    let pki = pki();
    let tls = TlsServer::echo(server_config(&pki.self_signed, None, Versions::Both));
    // Firmware, bus, the TCP connect's reply, the no-payload OK (also UDP's and TLS's connect).
    let rows: [(&str, &str, &[u8], &[u8]); 4] = [
        ("C3.5.2.3.STM", "uart", CONNECTING, OK),
        ("C3.5.2.5.STM", "spi", CONNECTING, OK),
        ("C6.2.1.7", "uart", OK, OK),
        ("C6.2.1.8", "uart", OK12, OK12),
    ];
    for (fw, bus, tcp_reply, ok_form) in rows {
        let is_spi = bus == "spi";
        let wire = |v: &[u8]| if is_spi { spi(v.to_vec()) } else { v.to_vec() };
        // The SPI host pads odd commands with 0x15, as the datasheet's worked example does.
        let cmd = |c: &str| {
            let mut v = c.as_bytes().to_vec();
            if is_spi && v.len() % 2 == 1 {
                v.push(0x15);
            }
            v
        };
        let cfg = format!("[identity]\nfirmware = \"{fw}\"\n[module]\nbus = \"{bus}\"\n");
        let mut emu = Emu::start_with(Some(&cfg), &[]);
        for c in ["C1=eswifi-e2e\r", "C2=secret123\r", "C3=3\r"] {
            emu.expect(&cmd(c), &wire(ok_form));
        }
        emu.expect(
            &cmd("C0\r"),
            &wire(&ok("[JOIN   ] eswifi-e2e,127.0.0.1,0,0")),
        );
        let clients = [
            (0, 0, tcp.port(), tcp_reply),
            (1, 1, udp.port(), ok_form),
            (2, 3, tls.port(), ok_form),
        ];
        for (sock, proto, port, want) in clients {
            for c in [
                format!("P0={sock}\r"),
                format!("P1={proto}\r"),
                "P3=127.0.0.1\r".into(),
                format!("P4={port}\r"),
            ] {
                emu.expect(&cmd(&c), &wire(ok_form));
            }
            let got = emu.cmd(&cmd("P6=1\r"));
            let what = format!("{fw} on {bus}: P6=1 with P1={proto}");
            assert_bytes(&got, &wire(want), &what);
            let readings = [
                ("ST", st_ok(&got)),
                ("CMSIS", cmsis_ok(&got)),
                ("Mbed", mbed_ok(&got)),
                ("Zephyr", zephyr_ok(&got)),
                ("Mongoose", mongoose_ok(&got)),
            ];
            for (driver, success) in readings {
                assert!(
                    success,
                    "{what}: {driver} reads \"{}\" as a failure",
                    esc(&got)
                );
            }
            // The Rust driver (TCP only) connects exactly where the connect line is printed.
            let announced = proto == 0 && fw.starts_with("C3.5.2.");
            assert_eq!(es_wifi_driver_connected(&got), announced, "{what}");
        }
        // The TCP socket is really connected: an echo comes back.
        emu.expect(&cmd("P0=0\r"), &wire(ok_form));
        emu.expect(&cmd("R2=2000\r"), &wire(ok_form));
        let payload: &[u8] = if is_spi {
            b"S3=0004\rping"
        } else {
            b"S3=4\rping"
        };
        emu.expect(payload, &wire(&ok("4")));
        emu.expect(&cmd("R0\r"), &wire(&ok("ping")));
        emu.stop();
    }
}

// ---- the SPI bus ----------------------------------------------------------------------------------

/// A reply as the SPI bus carries it: padded to whole 16-bit words with 0x15.
fn spi(mut v: Vec<u8>) -> Vec<u8> {
    if v.len() % 2 == 1 {
        v.push(0x15);
    }
    v
}

/// A command as an SPI host sends it: padded to whole words with 0x0A.
fn padded(cmd: &[u8]) -> Vec<u8> {
    let mut v = cmd.to_vec();
    if v.len() % 2 == 1 {
        v.push(b'\n');
    }
    v
}

#[test]
fn spi_bus_cursor_padding_and_events_by_mr() {
    let mut emu = Emu::start_with(Some("[module]\nbus = \"spi\"\n"), &[]);
    assert_bytes(
        &emu.boot,
        b"\x15\x15\r\n> ",
        "the 6-byte cursor ST's SPI layer fetches",
    );
    // Odd commands arrive padded with LF; odd replies leave padded with 0x15.
    emu.expect(&padded(b"CS\r"), b"\r\n0\r\nOK\r\n> \x15");
    // The datasheet pads with 0x15 instead: the pad is no part of the next command either.
    let id = ok(
        "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi",
    );
    emu.expect(b"I?\r\x15", &spi(id));
    emu.expect(b"CS\r\x15", b"\r\n0\r\nOK\r\n> \x15");
    emu.expect(&padded(b"C1=eswifi-e2e\r"), OK);
    emu.expect(
        &padded(b"C0\r"),
        &spi(ok("[JOIN   ] eswifi-e2e,127.0.0.1,0,0")),
    );
    emu.expect(&padded(b"B?\r"), b"\r\nSPI,0,0\r\nOK\r\n> \x15");
    // A server: the accept is fetched with MR, never written unsolicited.
    let port = closed_port();
    for c in ["P0=0\r", "P1=0\r", &format!("P2={port}\r"), "P5=1\r"] {
        emu.expect(&padded(c.as_bytes()), OK);
    }
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client.set_read_timeout(Some(SECS)).unwrap();
    let event = spi(ok(format!(
        "[SOMA][TCP SVR] Accepted 127.0.0.1:{port}[EOMA]"
    )));
    let mr = r0_data(&mut emu, &padded(b"MR\r"), &spi(ok("[SOMA][EOMA]")), 400);
    assert_bytes(&mr, &event, "MR");
    assert_bytes(
        &emu.read_for(Duration::from_millis(100)),
        b"",
        "nothing unsolicited",
    );
    // An odd payload padded with LF: the pad is not data.
    emu.expect(b"S3=0003\rabc\n", b"\r\n3\r\nOK\r\n> \x15");
    let mut buf = [0u8; 8];
    let n = client.read(&mut buf).expect("client read");
    assert_bytes(&buf[..n], b"abc", "what the client got");
    client.write_all(b"xyz").unwrap();
    emu.expect(&padded(b"R2=2000\r"), OK);
    emu.expect(&padded(b"R0\r"), &spi(ok("xyz")));
    // ZR: its reply, then the cursor again.
    emu.expect(
        &padded(b"ZR\r"),
        &[ok("[MODULE ] Resetting..."), b"\x15\x15\r\n> ".to_vec()].concat(),
    );
    emu.stop();
}

// ---- the commands added ----------------------------------------------------------------------------

const ZP_USAGE: &str = "<0=Normal/1=PS/2=Beacon/3=Radio/4=Radio reset/5=Stop/6=Sleep>[,<value>]";

#[test]
fn zp_ar_and_the_stubs_answer_as_drivers_expect() {
    let mut emu = Emu::start();
    let z = |ap: &str, ps: u8, radio: u8, cur: u32, prev: u32| {
        ok(format!(
            "1,12345678,0483,5740,C4:7F:51:01:12:31,{ap},{ps},{radio},{cur},{prev},Inventek eS-WiFi"
        ))
    };
    emu.expect(b"Z?\r", &z("127.0.10.1", 0, 1, 0, 0));
    // CMSIS: ZP=1,0 / ZP=2,n / ZP=6,n; Mongoose: ZP=0 before AD. All OK, reported by Z?.
    for c in ["ZP=1,0\r", "ZP=1,1\r", "ZP=2,100\r", "ZP=6,500\r", "ZP=0\r"] {
        emu.expect(c.as_bytes(), OK);
    }
    emu.expect(b"ZP\r", &err0("Insufficient Arguments", "ZP", ZP_USAGE));
    // Z? follows Z6 (it printed a fixed 192.168.10.1 before).
    emu.expect(b"Z6=127.0.10.1\r", OK);
    emu.expect(b"Z?\r", &z("127.0.10.1", 0, 1, 100, 0));
    // Mongoose's AP set-up, then its AR poll: one line per station, each ending CR LF.
    emu.expect(b"AS=0,e2e-ap\r", OK);
    emu.expect(b"A1=0\r", OK);
    emu.expect(
        b"AD\r",
        &ok("[AP     ] SSID: e2e-ap,127.0.10.1\r\n[WEB SVR] CSO Server started"),
    );
    emu.expect(b"AR\r", OK);
    let port = closed_port();
    for c in ["P0=0\r", "P1=0\r", &format!("P2={port}\r"), "P5=1\r"] {
        emu.expect(c.as_bytes(), OK);
    }
    let c = TcpStream::connect(("127.0.10.1", port)).expect("connect to the AP address");
    let ip = c.local_addr().unwrap().ip().to_string();
    let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
    let mac = format!("02:00:{:02X}:{:02X}:{:02X}:{:02X}", o[0], o[1], o[2], o[3]);
    let events = format!(
        "\r\n[AP DHCP] Assigned {mac} has {ip}\r\n> \r\n[TCP SVR] Accepted {ip}:{port}\r\n> "
    );
    assert_bytes(
        &emu.read_total(events.len()),
        events.as_bytes(),
        "station events",
    );
    emu.expect_ok(b"AR\r", format!("1,{mac},-40\r\n").as_bytes());
    emu.expect(b"AE\r", OK);
    emu.expect(b"AR\r", OK);
    // Stubs of §3.1, §3.4 and §3.8.
    for c in [
        "MF\r",
        "H0=note\r",
        "DB=1\r",
        "CE=0\r",
        "CF=0\r",
        "CJ=1,224.0.0.251\r",
        "CT=5\r",
        "G4=3,4\r",
        "G3=3,4,1\r",
        "SF=0\r",
        "PL=2\r",
        "WL=4,3,1\r",
    ] {
        emu.expect(c.as_bytes(), OK);
    }
    emu.expect_ok(b"G2=3,4\r", b"1");
    emu.expect_ok(b"G?\r", b"3,4,1");
    emu.expect_ok(b"WL=?\r", b"4,3,1");
    emu.expect_ok(b"IC\r", b"0");
    emu.expect_ok(b"CV\r", b"0");
    let help = emu.cmd(b"?\r");
    assert!(
        help.starts_with(b"\r\nConsole Commands:\r\n? - Show this help\r\n"),
        "{}",
        esc(&help)
    );
    // D0 without a network: the firmware's `:<code>` suffix.
    emu.expect(
        b"D0=example.test\r",
        b"\r\n[DNS  LU] Host not found example.test:4\r\nERROR: Unknown Error\r\nUsage: D0 <host name>\r\n> ",
    );
    emu.stop();
}

#[test]
fn s0_and_r4_on_a_tcp_echo() {
    let server = Server::tcp_echo();
    let mut emu = Emu::start();
    join(&mut emu);
    emu.connect_tcp(0, server.port());
    emu.expect(b"R2=2000\r", OK);
    // S0 takes S1 bytes, whatever they are: "R0\r" here is data, not a command.
    emu.expect(b"S1=8\r", OK);
    emu.expect(b"S2=20000\r", OK);
    emu.expect(b"S0\rab\rR0\rcd", &ok("8"));
    emu.expect(b"R4\r", &ok("0008ab\rR0\rcd"));
    // Fewer than S1: what came goes out when S2 runs out.
    emu.expect(b"S2=300\r", OK);
    emu.expect(b"S0\rxyz", &ok("3"));
    emu.expect(b"R4\r", &ok("0003xyz"));
    emu.expect(b"R2=0\r", OK);
    emu.expect(b"R4\r", &ok("0000"));
    emu.expect(b"P6=0\r", OK);
    emu.expect(b"R4\r", CLOSED);
    emu.stop();
}

#[test]
fn closed_connection_form_is_configurable() {
    let server = Server::tcp_send_then_close(b"bye");
    let mut emu = Emu::start_with(Some("[quirks]\nclosed_reply = \"usage\"\n"), &[]);
    join(&mut emu);
    emu.connect_tcp(0, server.port());
    emu.expect(b"R2=2000\r", OK);
    emu.expect(b"R0\r", &ok("bye"));
    let closed = r0_data(&mut emu, b"R0\r", OK, 100);
    assert_bytes(
        &closed,
        b"\r\n-1\r\nERROR: Unknown Error\r\nUsage: R0 \r\n> ",
        "R0 after the peer closed",
    );
    emu.expect(
        &s3(b"x"),
        b"\r\n-1\r\nERROR: Unknown Error\r\nUsage: S3 <1-1460>\r\n> ",
    );
    emu.expect(b"MT=1\r", OK);
    emu.expect(b"R0\r", CLOSED);
    emu.stop();
}

// ---- Zephyr's stray byte ------------------------------------------------------------------------

/// A TCP server that keeps what it receives.
fn sink() -> (Server, Arc<Mutex<Vec<u8>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let server = Server::tcp(move |mut s, ctl| {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 4096];
        while ctl.running() {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => keep.lock().unwrap().extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    });
    (server, got)
}

const TINY_PEM: &[u8] =
    b"-----BEGIN CERTIFICATE-----\r\nMAMCAQA=\r\n-----END CERTIFICATE-----\r\n\0";

#[test]
fn zephyr_stray_byte_in_its_own_write_100_times_never_garbles_a_command() {
    let (a, got_a) = sink();
    let (b, got_b) = sink();
    let mut emu = Emu::start_with(Some("[quirks]\ndrop_byte_after_payload = true\n"), &[]);
    join(&mut emu);
    emu.connect_tcp(0, a.port());
    emu.connect_tcp(1, b.port());
    // Bytes that would garble the next command if kept: "EP0=0", a bare CR, a digit, a NUL.
    let strays = [b'E', b'P', b'\r', b'0', 0u8, b'S'];
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut want_a, mut want_b) = (Vec::new(), Vec::new());
    for i in 0..100usize {
        assert!(
            Instant::now() < deadline,
            "100 rounds did not finish in time"
        );
        let sock = i % 2;
        let stray = strays[i % strays.len()];
        // Zephyr selects the socket before every command.
        emu.expect(format!("P0={sock}\r").as_bytes(), OK);
        let data = format!("<{i:03}>").into_bytes();
        emu.write(&s3(&data));
        // The stray byte comes after a pause, in a write of its own, so it is in a later read.
        std::thread::sleep(Duration::from_millis(3));
        emu.write(&[stray]);
        assert_bytes(
            &emu.read_until_prompt(SECS),
            &ok("5"),
            &format!("round {i}: S3 with stray 0x{stray:02x}"),
        );
        if sock == 0 {
            want_a.extend_from_slice(&data);
        } else {
            want_b.extend_from_slice(&data);
        }
        if i % 10 == 9 {
            // The same for PG (Zephyr: PG=0,<type>,<len> + one byte); the first writes the slot,
            // the others match it.
            let mut pg = format!("PG=1,0,{:04}\r", TINY_PEM.len()).into_bytes();
            pg.extend_from_slice(TINY_PEM);
            emu.write(&pg);
            std::thread::sleep(Duration::from_millis(3));
            emu.write(&[stray]);
            let want = if i == 9 {
                OK.to_vec()
            } else {
                ok("[CERTS   ] Match")
            };
            assert_bytes(
                &emu.read_until_prompt(SECS),
                &want,
                &format!("round {i}: PG"),
            );
        }
    }
    // Every payload went out on its own socket, whole, and nothing else did.
    let a_all = wait_for(
        SECS,
        || got_a.lock().unwrap().clone(),
        |g| g.len() >= want_a.len(),
    );
    let b_all = wait_for(
        SECS,
        || got_b.lock().unwrap().clone(),
        |g| g.len() >= want_b.len(),
    );
    assert_bytes(&a_all, &want_a, "socket 0's server");
    assert_bytes(&b_all, &want_b, "socket 1's server");
    emu.expect_ok(b"P0\r", b"1");
    // -v logs each dropped byte.
    if let Some(path) = emu.log_path() {
        let log = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        let n = log.matches("dropped the stray byte 0x45").count();
        assert!(n >= 17, "the log shows {n} dropped 0x45 bytes");
    }
    emu.stop();
}

// ---- Mbed's UDP clients ---------------------------------------------------------------------------

/// `n` UDP ports ≥ 49152 on 127.0.0.1 that were free a moment ago (Mbed's local ports).
fn mbed_local_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut p = 49152 + (std::process::id() % 8000) as u16;
    for _ in 0..16_000 {
        if ports.len() == n {
            break;
        }
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            ports.push(p);
        }
        p = if p == 65535 { 49152 } else { p + 1 };
    }
    assert_eq!(ports.len(), n, "free UDP ports");
    ports
}

/// `ISM43362::open` for UDP: no P2; P4 = the local port before P6=1, the remote port after.
fn mbed_open_udp(emu: &mut Emu, id: usize, local: u16, remote: u16) {
    for c in [
        format!("P0={id}\r"),
        "P1=1\r".into(),
        "P3=127.0.0.1\r".into(),
        format!("P4={local}\r"),
        "P5=0\r".into(),
        "P6=1\r".into(),
        format!("P0={id}\r"),
        format!("P4={remote}\r"),
        "R1=1200\r".into(),
        "R2=1\r".into(),
    ] {
        emu.expect(c.as_bytes(), OK);
    }
}

#[test]
fn mbed_udp_clients_two_and_four_at_once_bind_their_p4_ports() {
    for n in [2usize, 4] {
        let server = Server::udp_echo();
        let mut emu = Emu::start();
        join(&mut emu);
        let locals = mbed_local_ports(n);
        for (id, &local) in locals.iter().enumerate() {
            mbed_open_udp(&mut emu, id, local, server.port());
        }
        // Each socket sends and reads its own echo back.
        for (id, &local) in locals.iter().enumerate() {
            emu.expect(format!("P0={id}\r").as_bytes(), OK);
            let data = format!("sock{id}:{local}").into_bytes();
            emu.expect(&s3(&data), &ok(data.len().to_string()));
            let got = r0_data(&mut emu, b"R0\r", OK, 400);
            assert_bytes(
                &got,
                &ok(&data),
                &format!("{n} clients: socket {id}'s echo"),
            );
        }
        let mut seen: Vec<u16> = server.peers().iter().map(|a| a.port()).collect();
        seen.sort_unstable();
        assert_eq!(seen, locals, "{n} clients: source ports are the P4 values");
        emu.stop();
    }
}

#[test]
fn mbed_udp_client_falls_back_to_an_ephemeral_port_when_its_p4_port_is_taken() {
    let server = Server::udp_echo();
    let mut emu = Emu::start();
    join(&mut emu);
    let taken_port = mbed_local_ports(1)[0];
    let _taken = UdpSocket::bind(("127.0.0.1", taken_port)).expect("hold the port");
    mbed_open_udp(&mut emu, 0, taken_port, server.port());
    emu.expect(&s3(b"fallback"), &ok("8"));
    let got = r0_data(&mut emu, b"R0\r", OK, 400);
    assert_bytes(&got, &ok("fallback"), "echo");
    let peers = server.peers();
    assert_eq!(peers.len(), 1);
    assert_ne!(peers[0].port(), taken_port, "not the taken port");
    emu.stop();
}
