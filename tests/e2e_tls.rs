//! End-to-end tests of TLS client sockets (`P1=3`): the real binary on a pty, rustls servers on
//! 127.0.0.1 started by the tests, certificates generated with rcgen. Replies are asserted byte for
//! byte.

use eswifi_test_support::harness::*;
use eswifi_test_support::tls::*;
use rustls::ProtocolVersion;
use std::time::Duration;

const SECS: Duration = Duration::from_secs(30);

const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

fn joined() -> Emu {
    let mut emu = Emu::start();
    join(&mut emu);
    emu
}

fn pem(s: &str) -> &[u8] {
    s.as_bytes()
}

/// Program set `set` with the test CA and the given client identity (all three items).
fn program_full_set(emu: &mut Emu, set: u8, ca: &Identity, client: &Identity) {
    emu.expect(format!("PF=0,{set}\r").as_bytes(), OK);
    program_set(
        emu,
        set,
        Some(pem(&ca.cert_pem)),
        Some(pem(&client.cert_pem)),
        Some(pem(&client.key_pem)),
    );
    emu.expect(format!("PE={set}\r").as_bytes(), &pe("0,0,0"));
}

#[test]
fn p9_0_against_self_signed_server_connects_and_echoes() {
    let pki = pki();
    let server = TlsServer::echo(server_config(&pki.self_signed, None, Versions::Both));
    let mut emu = joined();
    // Nothing programmed anywhere.
    emu.expect(b"PE\r", &pe("1,1,1"));
    tls_connect(&mut emu, 0, server.port(), 0);
    emu.expect(b"R2=300\r", OK);
    let first = b"hello over TLS\r\n> \0\xff\r\nOK\r\n> ";
    echo_roundtrip(&mut emu, first);
    echo_roundtrip(&mut emu, &pattern(1460, 1));
    emu.expect(b"R0\r", OK);
    emu.expect(b"P6=0\r", OK);
    let log = server.log();
    assert_eq!(log.sessions.len(), 1, "server sessions: {log:?}");
    let s = &log.sessions[0];
    assert_eq!(s.client_subject, None, "no client certificate with P9=0");
    // P3 was an address and no D0 named it: no SNI.
    assert_eq!(s.sni, None, "SNI");
    assert_eq!(
        log.bytes_in,
        first.len() + 1460,
        "bytes the server received"
    );
    emu.stop();
}

#[test]
fn p9_1_verifies_against_the_programmed_root_ca_only() {
    let pki = pki();
    let server = TlsServer::echo(server_config(&pki.server, None, Versions::Both));
    let self_signed = TlsServer::echo(server_config(&pki.self_signed, None, Versions::Both));
    let mut emu = joined();
    // Set 1: the right CA. Set 2: an unrelated CA. Set 0: nothing.
    emu.expect(b"PF=0,1\r", OK);
    program(&mut emu, 1, 0, pem(&pki.ca.cert_pem));
    emu.expect(b"PF=0,2\r", OK);
    program(&mut emu, 2, 0, pem(&pki.other_ca.cert_pem));
    emu.expect(b"PE\r", &pe("1,0,0"));

    // Right CA: verified, data flows.
    emu.expect(b"PF=0,1\r", OK);
    tls_connect(&mut emu, 0, server.port(), 1);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"verified by the right CA");
    emu.expect(b"P6=0\r", OK);
    // The same CA does not vouch for a self-signed server.
    assert_bytes(
        &tls_start(&mut emu, 0, self_signed.port(), 1),
        SIMPLE_FAIL,
        "P9=1, right CA, self-signed server",
    );

    // Wrong CA: the Simple-context failure, exactly.
    emu.expect(b"PF=0,2\r", OK);
    let before = server.log().accepted;
    assert_bytes(
        &tls_start(&mut emu, 0, server.port(), 1),
        SIMPLE_FAIL,
        "P9=1 with an unrelated CA",
    );
    assert_log_mentions(&emu, "unknown issuer");
    // It was a handshake failure: the TCP connection was made.
    let log = server.wait_log(SECS, |l| l.accepted > before);
    assert_eq!(log.accepted, before + 1, "server connections");
    emu.expect(b"R0\r", CLOSED);
    // P9=0 ignores the CA.
    tls_connect(&mut emu, 0, server.port(), 0);
    echo_roundtrip(&mut emu, b"unverified");
    emu.expect(b"P6=0\r", OK);

    // No CA programmed: P9=1 verifies nothing and succeeds against any server.
    emu.expect(b"PF=0,0\r", OK);
    emu.expect(b"PE=0\r", &pe("1,1,1"));
    for port in [server.port(), self_signed.port()] {
        tls_connect(&mut emu, 0, port, 1);
        emu.expect(b"R2=300\r", OK);
        echo_roundtrip(&mut emu, b"no CA, no verification");
        emu.expect(b"P6=0\r", OK);
    }
    emu.stop();
}

#[test]
fn p9_2_mutual_tls_presents_the_client_certificate() {
    let pki = pki();
    let mut emu = joined();
    program_full_set(&mut emu, 0, &pki.ca, &pki.client);
    for (v, want) in [
        (Versions::Tls13, ProtocolVersion::TLSv1_3),
        (Versions::Tls12, ProtocolVersion::TLSv1_2),
    ] {
        let server = TlsServer::echo(server_config(&pki.server, Some(&pki.ca.cert_pem), v));
        tls_connect(&mut emu, 0, server.port(), 2);
        emu.expect(b"R2=300\r", OK);
        echo_roundtrip(&mut emu, format!("mutual TLS {v:?}").as_bytes());
        emu.expect(b"P6=0\r", OK);
        let log = server.log();
        assert_eq!(log.sessions.len(), 1, "{v:?}: server sessions {log:?}");
        let s = &log.sessions[0];
        assert_eq!(s.version, Some(want), "{v:?}: protocol version");
        assert_eq!(
            s.client_subject.as_deref(),
            Some("O=eswifi-emu tests, CN=eswifi-e2e client"),
            "{v:?}: client certificate subject seen by the server"
        );
        assert_eq!(
            s.client_subject.as_deref(),
            Some(pki.client.subject.as_str())
        );
        assert!(
            log.errors.is_empty(),
            "{v:?}: server errors {:?}",
            log.errors
        );
    }
    emu.stop();
}

#[test]
fn p9_2_with_key_missing_fails_before_connecting() {
    let pki = pki();
    let server = TlsServer::echo(server_config(
        &pki.server,
        Some(&pki.ca.cert_pem),
        Versions::Both,
    ));
    let mut emu = joined();
    emu.expect(b"PF=0,0\r", OK);
    program(&mut emu, 0, 0, pem(&pki.ca.cert_pem));
    program(&mut emu, 0, 1, pem(&pki.client.cert_pem));
    emu.expect(b"PE=0\r", &pe("0,0,1"));
    assert_bytes(
        &tls_start(&mut emu, 0, server.port(), 2),
        NO_CERT,
        "P9=2 without a key",
    );
    // An empty set fails the same way.
    emu.expect(b"PF=0,1\r", OK);
    assert_bytes(
        &tls_start(&mut emu, 0, server.port(), 2),
        NO_CERT,
        "P9=2 with an empty set",
    );
    // The module keeps answering; nothing ever reached the server.
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    assert_eq!(log.accepted, 0, "connections reaching the server: {log:?}");
    emu.stop();
}

/// The server requires a certificate from the test CA; set 0 holds one from an unrelated CA.
fn rejected_client_certificate(v: Versions) {
    let pki = pki();
    let server = TlsServer::echo(server_config(&pki.server, Some(&pki.ca.cert_pem), v));
    let mut emu = joined();
    program_full_set(&mut emu, 0, &pki.ca, &pki.other_client);
    assert_bytes(
        &tls_start(&mut emu, 0, server.port(), 2),
        CONN_ISSUE,
        &format!("{v:?}: server rejecting the client certificate"),
    );
    assert_log_mentions(&emu, "server rejected the client certificate");
    let log = server.wait_log(SECS, |l| !l.errors.is_empty());
    assert_eq!(log.accepted, 1, "{v:?}: connections {log:?}");
    assert!(
        log.sessions.is_empty(),
        "{v:?}: no session completed: {log:?}"
    );
    assert!(
        log.errors.iter().any(|e| e.contains("tls:")),
        "{v:?}: the server refused the handshake: {log:?}"
    );
    emu.expect(b"R0\r", CLOSED);
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());

    // Control: the right client certificate in set 1 is accepted by the same server.
    program_full_set(&mut emu, 1, &pki.ca, &pki.client);
    tls_connect(&mut emu, 0, server.port(), 2);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"accepted");
    emu.expect(b"P6=0\r", OK);
    let log = server.log();
    assert_eq!(log.sessions.len(), 1, "{v:?}: {log:?}");
    assert_eq!(
        log.sessions[0].client_subject.as_deref(),
        Some(pki.client.subject.as_str())
    );
    emu.stop();
}

#[test]
fn server_rejecting_client_certificate_tls13() {
    rejected_client_certificate(Versions::Tls13);
}

#[test]
fn server_rejecting_client_certificate_tls12() {
    rejected_client_certificate(Versions::Tls12);
}

#[test]
fn expired_server_certificate_fails_verification() {
    let pki = pki();
    let expired = TlsServer::echo(server_config(&pki.expired_server, None, Versions::Both));
    let mut emu = joined();
    program_full_set(&mut emu, 0, &pki.ca, &pki.client);
    assert_bytes(
        &tls_start(&mut emu, 0, expired.port(), 1),
        SIMPLE_FAIL,
        "P9=1, expired server certificate",
    );
    assert_log_mentions(&emu, "expired");
    assert_bytes(
        &tls_start(&mut emu, 0, expired.port(), 2),
        CONN_ISSUE,
        "P9=2, expired server certificate",
    );
    // Without verification the dates do not matter.
    tls_connect(&mut emu, 0, expired.port(), 0);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"expired but unverified");
    emu.expect(b"P6=0\r", OK);
    assert_eq!(expired.log().accepted, 3);
    emu.stop();
}

#[test]
fn plain_tcp_peer_on_a_tls_socket_fails_and_module_keeps_answering() {
    let pki = pki();
    let echo = Server::tcp_echo();
    let text =
        Server::tcp_send_then_close(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let slammer = Server::tcp(|s, _| drop(s));
    let mut emu = joined();
    let cases = [
        (
            "TCP echo server (gets its ClientHello back)",
            echo.port(),
            "unexpected handshake message",
        ),
        (
            "server writing plain text",
            text.port(),
            "does not speak TLS",
        ),
        ("server closing at once", slammer.port(), ""),
    ];
    for (i, (what, port, why)) in cases.into_iter().enumerate() {
        assert_bytes(
            &tls_start(&mut emu, 0, port, 0),
            SIMPLE_FAIL,
            &format!("P9=0 against a {what}"),
        );
        emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
        emu.expect(b"R0\r", CLOSED);
        if emu.log_path().is_some() {
            let log = emu_log(&emu);
            assert_eq!(
                log.matches("TLS handshake with set 0 failed").count(),
                i + 1,
                "{what}: the log names each failed handshake:\n{log}"
            );
            assert_log_mentions(&emu, why);
        }
    }
    program_full_set(&mut emu, 0, &pki.ca, &pki.client);
    assert_bytes(
        &tls_start(&mut emu, 0, text.port(), 2),
        CONN_ISSUE,
        "P9=2 against a server writing plain text",
    );
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    // The plain TCP echo still works as TCP, and TLS still works.
    emu.expect(b"P1=0\r", OK);
    emu.expect(format!("P4={}\r", echo.port()).as_bytes(), OK);
    emu.expect(b"P6=1\r", CONNECTING);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"plain");
    emu.expect(b"P6=0\r", OK);
    let tls = TlsServer::echo(server_config(&pki.server, None, Versions::Both));
    tls_connect(&mut emu, 0, tls.port(), 1);
    echo_roundtrip(&mut emu, b"tls again");
    emu.expect(b"P6=0\r", OK);
    emu.stop();
}

#[test]
fn tls_echo_of_100_kb_binary_compared_by_sha256() {
    let pki = pki();
    let server = TlsServer::echo(server_config(&pki.server, None, Versions::Both));
    let mut emu = joined();
    emu.expect(b"PF=0,0\r", OK);
    program(&mut emu, 0, 0, pem(&pki.ca.cert_pem));
    tls_connect(&mut emu, 0, server.port(), 1);
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=300\r", OK);

    let mut data: Vec<u8> = (0..=255u8).cycle().take(256 * 40).collect();
    data.extend(pattern(100 * 1024 - data.len(), 99));
    assert_eq!(data.len(), 102_400);
    let sizes = [1460usize, 1000, 1460, 7, 1460, 512, 1459, 1];
    let mut sent = 0;
    let mut back = Vec::with_capacity(data.len());
    let mut k = 0;
    let mut rounds = 0;
    while sent < data.len() {
        rounds += 1;
        assert!(rounds <= 200, "too many rounds");
        // A burst of S3 commands, then read the echo of the burst back.
        let start = sent;
        for _ in 0..8 {
            if sent == data.len() {
                break;
            }
            let n = sizes[k % sizes.len()].min(data.len() - sent);
            k += 1;
            emu.send(&data[sent..sent + n]);
            sent += n;
        }
        back.extend(emu.recv_exact(sent - start, SECS).0);
    }
    emu.expect(b"R0\r", OK);
    assert_eq!(back.len(), data.len(), "bytes echoed");
    assert_eq!(
        hex(&sha256(&back)),
        hex(&sha256(&data)),
        "SHA-256 of what came back vs what went out"
    );
    assert_eq!(server.log().bytes_in, data.len());
    emu.expect(b"P6=0\r", OK);
    emu.stop();
}

#[test]
fn only_one_tls_socket_at_a_time() {
    let pki = pki();
    let tls = TlsServer::echo(server_config(&pki.self_signed, None, Versions::Both));
    let tcp = Server::tcp_echo();
    let mut emu = joined();
    tls_connect(&mut emu, 0, tls.port(), 0);
    emu.expect(b"R2=300\r", OK);
    assert_bytes(
        &tls_start(&mut emu, 1, tls.port(), 0),
        &in_use(0),
        "second TLS socket",
    );
    assert_eq!(tls.log().accepted, 1, "the refused socket never connected");
    // A plain TCP socket alongside works.
    emu.connect_tcp(2, tcp.port());
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"plain TCP next to TLS");
    // And the TLS socket is unaffected.
    emu.expect(b"P0=0\r", OK);
    echo_roundtrip(&mut emu, b"still TLS on socket 0");
    // Once socket 0 is stopped, socket 1 may use TLS.
    emu.expect(b"P6=0\r", OK);
    emu.expect(b"P0=1\r", OK);
    emu.expect(b"P6=1\r", OK);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"TLS on socket 1");
    // Now socket 0 is the one refused.
    emu.expect(b"P0=0\r", OK);
    emu.expect(b"P6=1\r", &in_use(1));
    emu.expect(b"P0=2\r", OK);
    echo_roundtrip(&mut emu, b"TCP still fine");
    emu.expect(b"P6=0\r", OK);
    emu.expect(b"P0=1\r", OK);
    emu.expect(b"P6=0\r", OK);
    // Socket 0's and socket 1's connections; the two refused attempts never connected.
    assert_eq!(tls.log().accepted, 2, "TLS connections");
    emu.stop();
}

fn close_notify_after_data(at_open: bool) {
    let pki = pki();
    let reply = pattern(3000, 5);
    let server = {
        let reply = reply.clone();
        TlsServer::start(
            server_config(&pki.server, None, Versions::Both),
            move || Box::new(ReplyThenClose::new(&reply, at_open)),
        )
    };
    let mut emu = joined();
    tls_connect(&mut emu, 0, server.port(), 0);
    emu.expect(b"R1=1000\r", OK);
    emu.expect(b"R2=300\r", OK);
    if !at_open {
        emu.send(b"GET /bye HTTP/1.1\r\n\r\n");
    }
    let log = server.wait_log(SECS, |l| l.close_notify_sent == 1);
    assert_eq!(
        log.close_notify_sent, 1,
        "server sent close_notify: {log:?}"
    );
    // Let the close reach the module before reading: queued data must still be delivered.
    std::thread::sleep(Duration::from_millis(300));
    let (data, _) = emu.recv_exact(reply.len(), SECS);
    assert_bytes(&data, &reply, "data queued before close_notify");
    assert_bytes(
        &r0_until_not_empty(&mut emu, 30),
        CLOSED,
        "R0 after the peer's close_notify",
    );
    emu.expect(b"R0\r", CLOSED);
    emu.expect(&s3(b"x"), CLOSED);
    emu.expect(b"P6=0\r", OK);
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.stop();
}

#[test]
fn peer_close_notify_gives_minus_one_after_queued_data() {
    close_notify_after_data(false);
}

#[test]
fn peer_close_notify_right_after_handshake_gives_data_then_minus_one() {
    close_notify_after_data(true);
}

// ---- the TLS key log (--keylog, SSLKEYLOGFILE) ------------------------------------------------------

/// What a rustls peer of the module's sessions logs: the same lines the module's key log must hold.
#[derive(Debug, Default)]
struct Collect(std::sync::Mutex<Vec<String>>);

impl rustls::KeyLog for Collect {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}", hex(client_random), hex(secret));
        self.0.lock().unwrap().push(line);
    }
}

impl Collect {
    fn lines(&self) -> Vec<String> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort();
        v
    }
}

fn logged_server(v: Versions, log: &std::sync::Arc<Collect>) -> TlsServer {
    let pki = pki();
    let mut config = std::sync::Arc::unwrap_or_clone(server_config(&pki.self_signed, None, v));
    config.key_log = log.clone();
    TlsServer::echo(std::sync::Arc::new(config))
}

/// The key log's lines for sessions whose client random is one of `lines`'.
fn file_lines_like(path: &std::path::Path, lines: &[String]) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("the key log");
    let randoms: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|r| randoms.contains(&r)))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn keylog_writes_every_tls_sessions_secrets_in_the_nss_format_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keylog");
    let path = dir.path().join("keys.log");
    let mut emu = Emu::start_with(
        Some("[tls]\nserver = true\n"),
        &["--keylog", path.to_str().unwrap()],
    );
    join(&mut emu);
    let mode = std::fs::metadata(&path)
        .expect("created at start")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key log decrypts every session");

    // The module as a client, TLS 1.3 then TLS 1.2: the server saw the same secrets.
    let mut all = Vec::new();
    for (v, labels) in [
        (
            Versions::Tls13,
            &[
                "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0",
                "SERVER_TRAFFIC_SECRET_0",
            ][..],
        ),
        (Versions::Tls12, &["CLIENT_RANDOM"][..]),
    ] {
        let seen = std::sync::Arc::new(Collect::default());
        let server = logged_server(v, &seen);
        tls_connect(&mut emu, 0, server.port(), 0);
        emu.expect(b"R2=300\r", OK);
        echo_roundtrip(&mut emu, b"secret data");
        emu.expect(b"P6=0\r", OK);
        let want = seen.lines();
        for label in labels {
            assert!(
                want.iter().any(|l| l.starts_with(&format!("{label} "))),
                "{v:?}: the server logged no {label}: {want:?}"
            );
        }
        let got = wait_for(
            SECS,
            || file_lines_like(&path, &want),
            |g| g.len() >= want.len(),
        );
        assert_eq!(got, want, "{v:?}: the key log's lines for this session");
        all.extend(want);
    }

    // The module as a TLS server (the extension): a rustls client's secrets, the same.
    let pki = pki();
    program_set(
        &mut emu,
        0,
        Some(pki.ca.cert_pem.as_bytes()),
        Some(pki.server.cert_pem.as_bytes()),
        Some(pki.server.key_pem.as_bytes()),
    );
    let port = closed_port();
    for c in [
        "P0=1\r".to_string(),
        "P1=3\r".into(),
        format!("P2={port}\r"),
        "P9=0\r".into(),
        "P5=1\r".into(),
    ] {
        emu.expect(c.as_bytes(), OK);
    }
    let seen = std::sync::Arc::new(Collect::default());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.key_log = seen.clone();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(SECS)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    use std::io::Write;
    tls.write_all(b"hi")
        .expect("handshake with the module's TLS server");
    tls.flush().unwrap();
    let accepted = emu.read_until_prompt(SECS);
    assert!(
        accepted.starts_with(b"\r\n[TCP SVR] Accepted 127.0.0.1:"),
        "{}",
        esc(&accepted)
    );
    let want = seen.lines();
    assert!(
        want.iter()
            .any(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 ")),
        "{want:?}"
    );
    let got = wait_for(
        SECS,
        || file_lines_like(&path, &want),
        |g| g.len() >= want.len(),
    );
    assert_eq!(got, want, "the module as a server: the key log's lines");
    all.extend(want);
    drop(tls);

    // No secret reaches the log, even at -v.
    let log = emu_log(&emu);
    for line in &all {
        let secret = line.split(' ').nth(2).unwrap();
        assert!(!log.contains(secret), "a secret is in the log:\n{log}");
    }
    emu.stop();
}

#[test]
fn keylog_is_off_by_default_never_follows_a_symlink_and_takes_sslkeylogfile() {
    let dir = TempDir::new("keylog-link");
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"keep me\n").unwrap();
    let link = dir.path().join("keys.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, _, err) = run_binary(
        &["--keylog", link.to_str().unwrap(), "--stdio"],
        dir.path(),
        SECS,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me\n");

    // SSLKEYLOGFILE, as curl and browsers read it; without it (or empty), no key log.
    let file = dir.path().join("env.log");
    let stdio = |env: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(binary());
        cmd.args(["--stdio", "--certsets", dir.path().to_str().unwrap()])
            .env_remove("SSLKEYLOGFILE")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(p) = env {
            cmd.env("SSLKEYLOGFILE", p);
        }
        // An empty stdin (a pipe closed at once) ends the emulator.
        let out = cmd.spawn().unwrap().wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = stdio(Some(&file));
    assert!(
        err.contains("SSLKEYLOGFILE: the secrets of every TLS session"),
        "{err}"
    );
    assert!(file.exists(), "created by SSLKEYLOGFILE");
    let err = stdio(None);
    assert!(!err.contains("TLS session"), "{err}");
    let err = stdio(Some(std::path::Path::new("")));
    assert!(!err.contains("TLS session"), "{err}");
}
