//! End-to-end tests of the one-time-programmable certificate sets: `PF`/`PG`/`PE` over the pty, the
//! on-disk store (`--certsets`), its crash safety, the `flash` and `certs` tools, and the vendor app
//! note's three TLS client examples.

use eswifi_test_support::harness::*;
use eswifi_test_support::tls::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECS: Duration = Duration::from_secs(30);
const TOOL: Duration = Duration::from_secs(30);
const PG_USAGE: &str = "<set>,<0=Root CA/1=Certificate/2=Key>,<length>";
const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

fn start_on(dir: &Path) -> Emu {
    Emu::start_with(None, &["--certsets", dir.to_str().unwrap()])
}

fn joined_on(dir: &Path) -> Emu {
    let mut emu = start_on(dir);
    join(&mut emu);
    emu
}

fn item_path(dir: &Path, set: usize, item: usize) -> PathBuf {
    dir.join(format!("set{set}"))
        .join(["ca.otp", "cert.otp", "key.otp"][item])
}

/// The exact bytes of a complete item file (certsets/README.md).
fn item_file(data: &[u8]) -> Vec<u8> {
    let mut v = format!("eswifi-emu-otp 1 {} {}\n", data.len(), hex(&sha256(data))).into_bytes();
    v.extend_from_slice(data);
    v
}

/// A CA bundle of at least `min` bytes, `openssl`/ca-bundle style (a comment line before each
/// certificate), the test CA last.
fn ca_bundle(min: usize) -> Vec<u8> {
    let pki = pki();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() + pki.ca.cert_pem.len() + 64 < min {
        assert!(i < 60, "too many decoy CAs for {min} bytes");
        let pem = decoy_cas(1).remove(0);
        out.extend(format!("# decoy root {i}\n").bytes());
        out.extend(pem.bytes());
        i += 1;
    }
    out.extend(b"# the test CA\n");
    out.extend(pki.ca.cert_pem.bytes());
    out
}

#[test]
fn otp_items_program_once_then_match_or_refuse() {
    let pki = pki();
    let ca = pki.ca.cert_pem.as_bytes();
    let mut emu = Emu::start();
    emu.expect(b"PE\r", &pe("1,1,1"));
    for set in 0..3 {
        emu.expect(format!("PE={set}\r").as_bytes(), &pe("1,1,1"));
    }
    emu.expect(b"PF=0,0\r", OK);
    // First programming.
    emu.expect(
        &[format!("PG=0,0,{:04}\r", ca.len()).as_bytes(), ca].concat(),
        OK,
    );
    emu.expect(b"PE\r", &pe("0,1,1"));
    emu.expect(b"PE=0\r", &pe("0,1,1"));
    emu.expect(b"PE=1\r", &pe("1,1,1"));
    // The vendor's verification: the same bytes again match.
    assert_bytes(&pg(&mut emu, 0, 0, ca), MATCH, "identical rewrite");
    assert_bytes(&pg(&mut emu, 0, 0, ca), MATCH, "identical rewrite, again");
    // Different bytes: refused, nothing changes.
    assert_bytes(
        &pg(&mut emu, 0, 0, pki.other_ca.cert_pem.as_bytes()),
        USED,
        "another CA",
    );
    let mut one_more = ca.to_vec();
    one_more.push(b'\n');
    assert_bytes(&pg(&mut emu, 0, 0, &one_more), USED, "one byte longer");
    assert_bytes(
        &pg(&mut emu, 0, 0, &ca[..ca.len() - 1]),
        USED,
        "one byte shorter",
    );
    assert_bytes(&pg(&mut emu, 0, 0, ca), MATCH, "still the original");
    emu.expect(b"PE=0\r", &pe("0,1,1"));

    // Zero length: OK, the slot stays free (ST's driver sends empty items that way).
    emu.expect(b"PG=0,1,0000\r", OK);
    emu.expect(b"PG=0,2,0\r", OK);
    emu.expect(b"PE=0\r", &pe("0,1,1"));
    // The next command is a command, not payload.
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());

    program(&mut emu, 0, 1, pki.client.cert_pem.as_bytes());
    program(&mut emu, 0, 2, pki.client.key_pem.as_bytes());
    emu.expect(b"PE=0\r", &pe("0,0,0"));
    emu.expect(b"PE\r", &pe("0,1,1"));
    assert_bytes(
        &pg(&mut emu, 0, 2, pki.client.key_pem.as_bytes()),
        MATCH,
        "key rewrite",
    );
    assert_bytes(
        &pg(&mut emu, 0, 2, pki.other_client.key_pem.as_bytes()),
        USED,
        "another key",
    );
    // A zero-length PG on a used item leaves it alone.
    emu.expect(b"PG=0,2,0000\r", OK);
    assert_bytes(
        &pg(&mut emu, 0, 2, pki.client.key_pem.as_bytes()),
        MATCH,
        "key still the original",
    );
    // Programming set 1 does not touch set 0.
    program(&mut emu, 1, 0, pki.other_ca.cert_pem.as_bytes());
    emu.expect(b"PE\r", &pe("0,0,1"));
    emu.expect(b"PE=0\r", &pe("0,0,0"));
    emu.expect(b"PE=1\r", &pe("0,1,1"));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());

    // On disk: exactly the bytes sent; the key file private to the owner.
    let dir = emu.dir().join("certsets");
    assert_eq!(std::fs::read(item_path(&dir, 0, 0)).unwrap(), item_file(ca));
    assert_eq!(
        std::fs::read(item_path(&dir, 0, 2)).unwrap(),
        item_file(pki.client.key_pem.as_bytes())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(item_path(&dir, 0, 2))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    emu.stop();
}

#[test]
fn crlf_pem_with_trailing_nul_is_accepted_and_tls_works() {
    let pki = pki();
    let ca = crlf_nul(&pki.ca.cert_pem);
    let cert = crlf_nul(&pki.client.cert_pem);
    let key = crlf_nul(&pki.client.key_pem);
    assert_eq!(ca.last(), Some(&0));
    assert!(ca.windows(2).any(|w| w == b"\r\n"));
    let server = TlsServer::echo(server_config(&pki.server, None, Versions::Both));
    let mutual = TlsServer::echo(server_config(
        &pki.server,
        Some(&pki.ca.cert_pem),
        Versions::Both,
    ));
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"PF=0,1\r", OK);
    // As ST's driver sends them: strlen()+1, CRLF lines.
    program_set(&mut emu, 1, Some(&ca), Some(&cert), Some(&key));
    emu.expect(b"PE=1\r", &pe("0,0,0"));
    assert_bytes(&pg(&mut emu, 1, 0, &ca), MATCH, "CRLF+NUL rewrite");
    // The same PEM without the NUL is different bytes.
    assert_bytes(
        &pg(&mut emu, 1, 0, &ca[..ca.len() - 1]),
        USED,
        "without the NUL",
    );
    assert_bytes(
        &pg(&mut emu, 1, 0, pki.ca.cert_pem.as_bytes()),
        USED,
        "LF version",
    );

    tls_connect(&mut emu, 0, server.port(), 1);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"CA with CRLF and NUL");
    emu.expect(b"P6=0\r", OK);
    tls_connect(&mut emu, 0, mutual.port(), 2);
    echo_roundtrip(&mut emu, b"client cert and key with CRLF and NUL");
    emu.expect(b"P6=0\r", OK);
    let log = mutual.log();
    assert_eq!(log.sessions.len(), 1, "{log:?}");
    assert_eq!(
        log.sessions[0].client_subject.as_deref(),
        Some(pki.client.subject.as_str())
    );
    emu.stop();
}

#[test]
fn long_items_up_to_16_kib_are_accepted() {
    let pki = pki();
    let server = TlsServer::echo(server_config(&pki.server, None, Versions::Both));
    let self_signed = TlsServer::echo(server_config(&pki.self_signed, None, Versions::Both));
    let bundle = ca_bundle(8 * 1024);
    assert!(
        bundle.len() >= 8 * 1024 && bundle.len() < 10 * 1024,
        "{}",
        bundle.len()
    );
    // 16 KiB exactly: a bigger bundle padded with comment text (outside any PEM section).
    let mut max = ca_bundle(15 * 1024);
    assert!(max.len() < 16 * 1024 - 64, "{}", max.len());
    max.extend(b"# padding");
    while max.len() < 16 * 1024 - 1 {
        max.push(b'.');
    }
    max.push(b'\n');
    assert_eq!(max.len(), 16384);

    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"PF=0,2\r", OK);
    // Over the limit: refused before any payload.
    emu.expect(b"PG=2,1,16385\r", &err0("Bad Argument", "PG", PG_USAGE));
    emu.expect(b"PE=2\r", &pe("1,1,1"));
    program(&mut emu, 2, 0, &bundle);
    emu.expect(b"PE=2\r", &pe("0,1,1"));
    assert_bytes(&pg(&mut emu, 2, 0, &bundle), MATCH, "8 KiB rewrite");
    // The bundle verifies the server (its CA is the last of many) and nothing else.
    tls_connect(&mut emu, 0, server.port(), 1);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"verified through an 8 KiB bundle");
    emu.expect(b"P6=0\r", OK);
    assert_bytes(
        &tls_start(&mut emu, 0, self_signed.port(), 1),
        SIMPLE_FAIL,
        "self-signed server against the bundle",
    );

    emu.expect(b"PF=0,1\r", OK);
    let mut req = b"PG=1,0,16384\r".to_vec();
    req.extend_from_slice(&max);
    emu.expect(&req, OK);
    emu.expect(b"PE=1\r", &pe("0,1,1"));
    assert_bytes(&pg(&mut emu, 1, 0, &max), MATCH, "16 KiB rewrite");
    tls_connect(&mut emu, 0, server.port(), 1);
    echo_roundtrip(&mut emu, b"verified through a 16 KiB bundle");
    emu.expect(b"P6=0\r", OK);

    // A long client chain (leaf and four intermediates) in item 1 of set 0: all of it is sent.
    let root = Ca::new("eswifi-e2e chain root");
    let mut cas = vec![root.intermediate("eswifi-e2e intermediate 1")];
    for i in 2..=4 {
        let next = cas
            .last()
            .unwrap()
            .intermediate(&format!("eswifi-e2e intermediate {i}"));
        cas.push(next);
    }
    let leaf = cas
        .last()
        .unwrap()
        .issue("eswifi-e2e chained client", false, None);
    let mut chain = leaf.cert_pem.clone();
    for ca in cas.iter().rev() {
        chain.push_str(&ca.id.cert_pem);
    }
    let chained = TlsServer::echo(server_config(
        &pki.server,
        Some(&root.id.cert_pem),
        Versions::Both,
    ));
    emu.expect(b"PF=0,0\r", OK);
    program_set(
        &mut emu,
        0,
        Some(pki.ca.cert_pem.as_bytes()),
        Some(chain.as_bytes()),
        Some(leaf.key_pem.as_bytes()),
    );
    tls_connect(&mut emu, 0, chained.port(), 2);
    echo_roundtrip(&mut emu, b"client chain of five");
    emu.expect(b"P6=0\r", OK);
    let log = chained.log();
    assert_eq!(log.sessions.len(), 1, "{log:?}");
    assert_eq!(log.sessions[0].client_chain_len, 5, "certificates sent");
    assert_eq!(
        log.sessions[0].client_subject.as_deref(),
        Some(leaf.subject.as_str())
    );

    let dir = emu.dir().join("certsets");
    assert_eq!(
        std::fs::read(item_path(&dir, 1, 0)).unwrap(),
        item_file(&max)
    );
    assert_eq!(
        std::fs::read(item_path(&dir, 2, 0)).unwrap(),
        item_file(&bundle)
    );
    emu.stop();
}

#[test]
fn sets_persist_across_a_restart() {
    let pki = pki();
    let store = TempDir::new("store");
    let server = TlsServer::echo(server_config(&pki.server, None, Versions::Both));
    let self_signed = TlsServer::echo(server_config(&pki.self_signed, None, Versions::Both));
    let mutual = TlsServer::echo(server_config(
        &pki.server,
        Some(&pki.ca.cert_pem),
        Versions::Both,
    ));
    {
        let mut emu = start_on(store.path());
        emu.expect(b"PE\r", &pe("1,1,1"));
        program_set(
            &mut emu,
            0,
            Some(pki.ca.cert_pem.as_bytes()),
            Some(pki.client.cert_pem.as_bytes()),
            Some(pki.client.key_pem.as_bytes()),
        );
        program(&mut emu, 1, 0, pki.ca.cert_pem.as_bytes());
        emu.expect(b"PE\r", &pe("0,0,1"));
        emu.stop();
    }
    let mut emu = joined_on(store.path());
    emu.expect(b"PE\r", &pe("0,0,1"));
    emu.expect(b"PE=0\r", &pe("0,0,0"));
    emu.expect(b"PE=1\r", &pe("0,1,1"));
    emu.expect(b"PE=2\r", &pe("1,1,1"));
    // Still one-time programmed.
    assert_bytes(
        &pg(&mut emu, 1, 0, pki.ca.cert_pem.as_bytes()),
        MATCH,
        "set 1 CA after restart",
    );
    assert_bytes(
        &pg(&mut emu, 1, 0, pki.other_ca.cert_pem.as_bytes()),
        USED,
        "set 1 CA, other bytes, after restart",
    );
    // And used for verification.
    emu.expect(b"PF=0,1\r", OK);
    tls_connect(&mut emu, 0, server.port(), 1);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"after restart");
    emu.expect(b"P6=0\r", OK);
    assert_bytes(
        &tls_start(&mut emu, 0, self_signed.port(), 1),
        SIMPLE_FAIL,
        "P9=1 after restart, self-signed server",
    );
    emu.expect(b"PF=0,0\r", OK);
    tls_connect(&mut emu, 0, mutual.port(), 2);
    echo_roundtrip(&mut emu, b"mutual after restart");
    emu.expect(b"P6=0\r", OK);
    assert_eq!(
        mutual.log().sessions[0].client_subject.as_deref(),
        Some(pki.client.subject.as_str())
    );
    emu.stop();
    // A third start, with SIGKILL instead of a clean stop in between, sees the same.
    let mut emu = start_on(store.path());
    emu.signal(libc::SIGKILL);
    emu.wait_exit(EXIT_TIMEOUT);
    let mut emu = start_on(store.path());
    emu.expect(b"PE\r", &pe("0,0,1"));
    emu.expect(b"PE=0\r", &pe("0,0,0"));
    emu.stop();
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Header and this many payload bytes, wait (ms), SIGKILL.
    Partial(usize, u64),
    /// The whole payload, wait (ms), SIGKILL.
    AfterLastByte(u64),
    /// The whole payload, wait for OK (durable), SIGKILL.
    AfterOk,
}

/// Files in the set directories that are not items (temp files left by a write).
fn stray_files(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for set in 0..4 {
        if let Ok(rd) = std::fs::read_dir(dir.join(format!("set{set}"))) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !["ca.otp", "cert.otp", "key.otp"].contains(&n.as_str()) {
                    v.push(format!("set{set}/{n}"));
                }
            }
        }
    }
    v
}

#[test]
fn sigkill_during_pg_leaves_items_absent_or_complete() {
    let pki = pki();
    let store = TempDir::new("store");
    let dir = store.path();
    let ca = ca_bundle(12 * 1024);
    let cert = [pki.client.cert_pem.as_bytes(), &ca_bundle(8 * 1024)].concat();
    let cert = cert.as_slice();
    let key = crlf_nul(&pki.client.key_pem);
    let data: [&[u8]; 3] = [&ca, cert, &key];
    let plan = [
        ((0usize, 0usize), Kill::Partial(6000, 50)),
        ((0, 1), Kill::Partial(1, 0)),
        ((0, 2), Kill::AfterLastByte(0)),
        ((1, 0), Kill::AfterLastByte(0)),
        ((1, 1), Kill::AfterLastByte(1)),
        ((1, 2), Kill::AfterLastByte(3)),
        ((2, 0), Kill::AfterLastByte(10)),
        ((2, 1), Kill::AfterLastByte(40)),
        ((2, 2), Kill::AfterOk),
    ];
    let mut present = [[false; 3]; 3];
    for ((set, item), kill) in plan {
        // Must start: a torn file would stop it with an error.
        let mut emu = start_on(dir);
        assert_eq!(
            stray_files(dir),
            Vec::<String>::new(),
            "temp files after start"
        );
        for (s, items) in present.iter().enumerate() {
            let want: Vec<&str> = items.iter().map(|&p| if p { "0" } else { "1" }).collect();
            emu.expect(format!("PE={s}\r").as_bytes(), &pe(want.join(",")));
        }
        let bytes = data[item];
        let mut req = format!("PG={set},{item},{:04}\r", bytes.len()).into_bytes();
        match kill {
            Kill::Partial(n, wait) => {
                assert!(n < bytes.len());
                req.extend_from_slice(&bytes[..n]);
                emu.write(&req);
                std::thread::sleep(Duration::from_millis(wait));
            }
            Kill::AfterLastByte(wait) => {
                req.extend_from_slice(bytes);
                emu.write(&req);
                std::thread::sleep(Duration::from_millis(wait));
            }
            Kill::AfterOk => {
                req.extend_from_slice(bytes);
                emu.expect(&req, OK);
            }
        }
        emu.signal(libc::SIGKILL);
        emu.wait_exit(EXIT_TIMEOUT);
        drop(emu);
        let path = item_path(dir, set, item);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    !matches!(kill, Kill::AfterOk),
                    "{kill:?}: {} missing after OK",
                    path.display()
                );
            }
            Err(e) => panic!("{}: {e}", path.display()),
            Ok(got) => {
                assert!(
                    !matches!(kill, Kill::Partial(..)),
                    "{kill:?}: {} exists after an incomplete payload",
                    path.display()
                );
                assert!(
                    got == item_file(bytes),
                    "{kill:?}: {} is not complete ({} bytes, want {})",
                    path.display(),
                    got.len(),
                    item_file(bytes).len()
                );
                present[set][item] = true;
            }
        }
        eprintln!(
            "set {set} item {item}, {kill:?}: {}",
            if present[set][item] {
                "complete"
            } else {
                "absent"
            }
        );
    }
    // What a kill in the middle of a write leaves: a temp file next to the item (absent item).
    std::fs::create_dir_all(dir.join("set0")).unwrap();
    std::fs::create_dir_all(dir.join("set1")).unwrap();
    std::fs::write(dir.join("set0").join(".ca.otp.tmp"), &ca[..5000]).unwrap();
    std::fs::write(dir.join("set1").join(".cert.otp.tmp"), b"").unwrap();
    assert_eq!(stray_files(dir).len(), 2);
    // A final start: every item absent or complete, the complete ones match their bytes.
    let mut emu = start_on(dir);
    assert_eq!(
        stray_files(dir),
        Vec::<String>::new(),
        "temp files after start"
    );
    for (s, items) in present.iter().enumerate() {
        let want: Vec<&str> = items.iter().map(|&p| if p { "0" } else { "1" }).collect();
        emu.expect(format!("PE={s}\r").as_bytes(), &pe(want.join(",")));
        for (i, &p) in items.iter().enumerate() {
            if p {
                assert_bytes(
                    &pg(&mut emu, s as u8, i as u8, data[i]),
                    MATCH,
                    &format!("set {s} item {i}"),
                );
            }
        }
    }
    emu.stop();
    let listing = certs_listing(dir);
    for (s, items) in present.iter().enumerate() {
        let block: String = listing
            .split(&format!("set {s} ("))
            .nth(1)
            .unwrap_or_default()
            .split("\nset ")
            .next()
            .unwrap_or_default()
            .to_string();
        for (i, &p) in items.iter().enumerate() {
            let label = ["root CA:", "client certificate:", "client key:"][i];
            let want = if p {
                format!("  {label:<20} {} bytes", data[i].len())
            } else {
                format!("  {label:<20} empty")
            };
            assert!(
                block.lines().any(|l| l == want),
                "set {s}: no line {want:?} in:\n{listing}"
            );
        }
    }
}

#[test]
fn corrupt_item_file_stops_the_emulator_naming_it() {
    let pki = pki();
    let store = TempDir::new("store");
    let dir = store.path();
    let d = dir.to_str().unwrap();
    {
        let mut emu = start_on(dir);
        program_set(
            &mut emu,
            0,
            Some(pki.ca.cert_pem.as_bytes()),
            Some(pki.client.cert_pem.as_bytes()),
            Some(pki.client.key_pem.as_bytes()),
        );
        emu.stop();
    }
    type Corrupt = fn(&mut Vec<u8>);
    let cases: [(usize, &str, Corrupt); 4] = [
        (0, "truncated to half", |b| b.truncate(b.len() / 2)),
        (1, "truncated to its header", |b| {
            let nl = b.iter().position(|&c| c == b'\n').unwrap();
            b.truncate(nl + 1)
        }),
        (2, "last byte flipped", |b| *b.last_mut().unwrap() ^= 0x20),
        (0, "emptied", |b| b.clear()),
    ];
    for (item, what, corrupt) in cases {
        let path = item_path(dir, 0, item);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        corrupt(&mut bad);
        std::fs::write(&path, &bad).unwrap();
        let shown = path.display().to_string();

        let (code, _out, err) = run_tool(&["--certsets", d], TOOL);
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: emulator exit status {code:?}, stderr {err}"
        );
        assert!(
            err.contains(&shown),
            "{what}: stderr does not name {shown}: {err}"
        );
        let (code, _out, err) = run_tool(&["--certsets", d, "certs"], TOOL);
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: certs exit status {code:?}"
        );
        assert!(err.contains(&shown), "{what}: certs stderr: {err}");

        // Restored, it starts again with the set intact.
        std::fs::write(&path, &good).unwrap();
        let mut emu = start_on(dir);
        emu.expect(b"PE=0\r", &pe("0,0,0"));
        emu.stop();
    }
}

#[test]
fn flash_and_certs_tools() {
    let pki = pki();
    let files = TempDir::new("pem");
    let store = TempDir::new("store");
    let d = store.path().to_str().unwrap();
    let ca = files.path().join("ca.pem");
    let client = files.path().join("client.pem");
    let key = files.path().join("client.key");
    std::fs::write(&ca, &pki.ca.cert_pem).unwrap();
    std::fs::write(&client, &pki.client.cert_pem).unwrap();
    std::fs::write(&key, &pki.client.key_pem).unwrap();
    let (ca_s, client_s, key_s) = (
        ca.to_str().unwrap(),
        client.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let secret = pki.client.key_body_lines();
    assert!(secret.len() >= 2);
    let no_secret = |what: &str, text: &str| {
        for l in &secret {
            assert!(
                !text.contains(l.as_str()),
                "{what} shows key material: {text}"
            );
        }
    };

    let (code, out, err) = run_tool(
        &[
            "--certsets",
            d,
            "flash",
            "--set",
            "1",
            "--ca",
            ca_s,
            "--cert",
            client_s,
            "--key",
            key_s,
        ],
        TOOL,
    );
    assert_eq!(code, Some(0), "flash: {out} {err}");
    no_secret("flash stdout", &out);
    no_secret("flash stderr", &err);
    let (n_ca, n_client, n_key) = (
        pki.ca.cert_pem.len(),
        pki.client.cert_pem.len(),
        pki.client.key_pem.len(),
    );
    assert_eq!(
        out,
        format!(
            "set 1: root CA ← {ca_s} ({n_ca} bytes)\nset 1: client certificate ← {client_s} ({n_client} bytes)\nset 1: client key ← {key_s} ({n_key} bytes)\n"
        ),
        "flash output"
    );

    let empty = |s: usize, kind: &str| {
        format!(
            "set {s} ({kind}):\n  root CA:             empty\n  client certificate:  empty\n  client key:          empty\n"
        )
    };
    let listing = certs_listing(store.path());
    no_secret("certs", &listing);
    let set1 = format!(
        "set 1 (one-time programmable):\n\
         \x20 root CA:             {n_ca} bytes\n\
         \x20   subject: O=eswifi-emu tests, CN=eswifi-e2e CA\n\
         \x20   issuer:  O=eswifi-emu tests, CN=eswifi-e2e CA\n\
         \x20   valid:   Jan  1 00:00:00 2015 +00:00 to Dec 31 00:00:00 2099 +00:00\n\
         \x20 client certificate:  {n_client} bytes\n\
         \x20   subject: O=eswifi-emu tests, CN=eswifi-e2e client\n\
         \x20   issuer:  O=eswifi-emu tests, CN=eswifi-e2e CA\n\
         \x20   valid:   Jan  1 00:00:00 2020 +00:00 to Jan  1 00:00:00 2099 +00:00\n\
         \x20 client key:          {n_key} bytes\n\
         \x20   PKCS#8 private key\n"
    );
    let want = [
        empty(0, "one-time programmable"),
        set1,
        empty(2, "one-time programmable"),
        empty(3, "re-writable on C6 firmware"),
    ]
    .concat();
    assert_eq!(listing, want, "certs output");

    // The flashed set serves mutual TLS.
    let mutual = TlsServer::echo(server_config(
        &pki.server,
        Some(&pki.ca.cert_pem),
        Versions::Both,
    ));
    {
        let mut emu = joined_on(store.path());
        emu.expect(b"PE\r", &pe("1,0,1"));
        emu.expect(b"PE=1\r", &pe("0,0,0"));
        emu.expect(b"PF=0,1\r", OK);
        tls_connect(&mut emu, 0, mutual.port(), 2);
        emu.expect(b"R2=300\r", OK);
        echo_roundtrip(&mut emu, b"flashed set");
        emu.expect(b"P6=0\r", OK);
        // OTP over the wire, even for flashed items.
        assert_bytes(
            &pg(&mut emu, 1, 0, pki.other_ca.cert_pem.as_bytes()),
            USED,
            "PG over a flashed CA",
        );
        emu.stop();
    }
    assert_eq!(
        mutual.log().sessions[0].client_subject.as_deref(),
        Some(pki.client.subject.as_str())
    );

    // flash replaces what is there (a complete firmware image).
    let other = files.path().join("other.pem");
    std::fs::write(&other, &pki.other_ca.cert_pem).unwrap();
    let (code, _, err) = run_tool(
        &[
            "--certsets",
            d,
            "flash",
            "--set",
            "1",
            "--ca",
            other.to_str().unwrap(),
        ],
        TOOL,
    );
    assert_eq!(code, Some(0), "flash over: {err}");
    let listing = certs_listing(store.path());
    assert!(
        listing.contains("    subject: O=eswifi-emu tests, CN=eswifi-e2e other CA\n"),
        "{listing}"
    );

    // --erase empties everything.
    let (code, out, err) = run_tool(&["--certsets", d, "flash", "--erase"], TOOL);
    assert_eq!(code, Some(0), "erase: {out} {err}");
    assert_eq!(
        out,
        format!("erased every certificate set and the saved settings in {d}\n")
    );
    let listing = certs_listing(store.path());
    assert_eq!(
        listing,
        [
            empty(0, "one-time programmable"),
            empty(1, "one-time programmable"),
            empty(2, "one-time programmable"),
            empty(3, "re-writable on C6 firmware"),
        ]
        .concat(),
        "certs after erase"
    );
    for s in 0..3 {
        for i in 0..3 {
            assert!(!item_path(store.path(), s, i).exists());
        }
    }
    let mut emu = start_on(store.path());
    emu.expect(b"PE\r", &pe("1,1,1"));
    emu.expect(b"PE=1\r", &pe("1,1,1"));
    // Blank again: programmable again.
    program(&mut emu, 1, 0, pki.ca.cert_pem.as_bytes());
    emu.stop();
}

// ---- the store does not follow symbolic links ---------------------------------------------------

/// What a planted link points at: a file that is not the store's.
const VICTIM: &[u8] = b"someone else's file\n";

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A file outside the store, mode 0644, for a planted link to point at.
fn victim(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("victim.txt");
    std::fs::write(&path, VICTIM).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[track_caller]
fn assert_victim_untouched(path: &Path) {
    let now = std::fs::read(path).unwrap();
    assert!(
        now == VICTIM,
        "{} was written through the link ({} bytes now)",
        path.display(),
        now.len()
    );
    assert_eq!(mode_of(path), 0o644, "{} mode changed", path.display());
}

/// `set`/`item` is a regular file (not a link) with `mode`, holding exactly `data` as an item.
#[track_caller]
fn assert_item_on_disk(dir: &Path, set: usize, item: usize, mode: u32, data: &[u8]) {
    let path = item_path(dir, set, item);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{} is not a regular file: {:?}",
        path.display(),
        meta.file_type()
    );
    assert_eq!(mode_of(&path), mode, "mode of {}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), item_file(data));
}

fn plant_link(target: &Path, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn flash_does_not_follow_a_planted_temp_symlink() {
    let pki = pki();
    let files = TempDir::new("pem");
    let store = TempDir::new("store");
    let dir = store.path();
    let key = files.path().join("client.key");
    std::fs::write(&key, &pki.client.key_pem).unwrap();
    let victim = victim(files.path());
    plant_link(&victim, &dir.join("set0").join(".key.otp.tmp"));
    // A stale link for an item this flash does not write: removed, as at start.
    plant_link(&victim, &dir.join("set0").join(".ca.otp.tmp"));
    let (code, out, err) = run_tool(
        &[
            "--certsets",
            dir.to_str().unwrap(),
            "flash",
            "--set",
            "0",
            "--key",
            key.to_str().unwrap(),
        ],
        TOOL,
    );
    assert_eq!(code, Some(0), "flash: {out} {err}");
    assert_victim_untouched(&victim);
    assert_item_on_disk(dir, 0, 2, 0o600, pki.client.key_pem.as_bytes());
    assert_eq!(stray_files(dir), Vec::<String>::new(), "temp files left");
}

#[test]
fn live_pg_does_not_follow_a_planted_temp_symlink() {
    let pki = pki();
    let files = TempDir::new("victim");
    let store = TempDir::new("store");
    let dir = store.path();
    let victim = victim(files.path());
    let key = crlf_nul(&pki.client.key_pem);
    let mut emu = start_on(dir);
    // Planted while it runs (a link there at start is removed as a stale temp file).
    plant_link(&victim, &dir.join("set0").join(".key.otp.tmp"));
    program(&mut emu, 0, 2, &key);
    emu.expect(b"PE=0\r", &pe("1,1,0"));
    assert_victim_untouched(&victim);
    assert_item_on_disk(dir, 0, 2, 0o600, &key);
    // A set directory that became a link while it runs: PG fails, nothing lands behind the link.
    let elsewhere = files.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let link = dir.join("set1");
    plant_link(&elsewhere, &link);
    let got = pg(&mut emu, 1, 0, pki.ca.cert_pem.as_bytes());
    assert!(
        String::from_utf8_lossy(&got).contains("[CERTS  ] Failed to write to iFlash"),
        "PG into a linked set directory answered \"{}\"",
        esc(&got)
    );
    emu.expect(b"PE=1\r", &pe("1,1,1"));
    assert_log_mentions(&emu, &format!("{} is a symbolic link", link.display()));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    std::fs::remove_file(&link).unwrap();
    emu.stop();
    let mut emu = start_on(dir);
    assert_bytes(&pg(&mut emu, 0, 2, &key), MATCH, "key after restart");
    emu.stop();
    assert_victim_untouched(&victim);
}

#[test]
fn symlinked_set_directory_is_refused_naming_it() {
    let pki = pki();
    let files = TempDir::new("pem");
    let real = TempDir::new("real");
    let store = TempDir::new("store");
    let ca = files.path().join("ca.pem");
    let key = files.path().join("client.key");
    std::fs::write(&ca, &pki.ca.cert_pem).unwrap();
    std::fs::write(&key, &pki.client.key_pem).unwrap();
    let (ca_s, key_s) = (ca.to_str().unwrap(), key.to_str().unwrap());
    let (real_d, d) = (
        real.path().to_str().unwrap(),
        store.path().to_str().unwrap(),
    );
    let (code, _, err) = run_tool(
        &["--certsets", real_d, "flash", "--set", "0", "--ca", ca_s],
        TOOL,
    );
    assert_eq!(code, Some(0), "flash the real set: {err}");
    let target = real.path().join("set0");
    let link = store.path().join("set1");
    plant_link(&target, &link);
    let shown = link.display().to_string();
    // The start last: before the fix it served instead of exiting (and run_tool waits it out).
    let runs: [(&str, Vec<&str>); 4] = [
        ("certs", vec!["--certsets", d, "certs"]),
        (
            "flash",
            vec!["--certsets", d, "flash", "--set", "1", "--key", key_s],
        ),
        ("flash --erase", vec!["--certsets", d, "flash", "--erase"]),
        ("start", vec!["--certsets", d]),
    ];
    for (what, args) in runs {
        let (code, _, err) = run_tool(&args, TOOL);
        assert!(code.is_some_and(|c| c != 0), "{what}: exit status {code:?}");
        assert!(
            err.contains(&shown) && err.contains("symbolic link"),
            "{what}: stderr does not name {shown} as a symbolic link: {err}"
        );
    }
    assert_item_on_disk(real.path(), 0, 0, 0o644, pki.ca.cert_pem.as_bytes());
    let names: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["ca.otp"], "the link's target changed");
}

/// Run the emulator binary under `sh` with `umask` set, bounded like [`run_tool`].
fn run_tool_with_umask(umask: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_eswifi-emu"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning sh");
    let deadline = std::time::Instant::now() + TOOL;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("eswifi-emu {args:?} still running after {TOOL:?}");
            }
        }
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status.code(), err)
}

#[test]
fn item_modes_do_not_depend_on_the_umask() {
    let pki = pki();
    let files = TempDir::new("pem");
    let store = TempDir::new("store");
    let dir = store.path();
    let ca = files.path().join("ca.pem");
    let key = files.path().join("client.key");
    std::fs::write(&ca, &pki.ca.cert_pem).unwrap();
    std::fs::write(&key, &pki.client.key_pem).unwrap();
    // A stale world-readable temp file for the key must not lend the key its mode.
    let stale = dir.join("set0").join(".key.otp.tmp");
    std::fs::create_dir_all(dir.join("set0")).unwrap();
    std::fs::write(&stale, b"stale").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (code, err) = run_tool_with_umask(
        "077",
        &[
            "--certsets",
            dir.to_str().unwrap(),
            "flash",
            "--set",
            "0",
            "--ca",
            ca.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "flash under umask 077: {err}");
    assert_item_on_disk(dir, 0, 0, 0o644, pki.ca.cert_pem.as_bytes());
    assert_item_on_disk(dir, 0, 2, 0o600, pki.client.key_pem.as_bytes());
}

#[test]
fn key_material_never_in_the_log() {
    let pki = pki();
    let mutual = TlsServer::echo(server_config(
        &pki.server,
        Some(&pki.ca.cert_pem),
        Versions::Both,
    ));
    // Most verbose logging: every command and every socket byte.
    let mut emu = Emu::start_with(None, &["-vv"]);
    join(&mut emu);
    emu.expect(b"PF=0,0\r", OK);
    let key = crlf_nul(&pki.client.key_pem);
    program_set(
        &mut emu,
        0,
        Some(pki.ca.cert_pem.as_bytes()),
        Some(pki.client.cert_pem.as_bytes()),
        Some(&key),
    );
    assert_bytes(&pg(&mut emu, 0, 2, &key), MATCH, "key rewrite");
    assert_bytes(
        &pg(&mut emu, 0, 2, pki.other_client.key_pem.as_bytes()),
        USED,
        "other key",
    );
    tls_connect(&mut emu, 0, mutual.port(), 2);
    emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut emu, b"secret-free log");
    emu.expect(b"P6=0\r", OK);
    emu.stop();
    let log = emu_log(&emu);
    if emu.log_path().is_some() {
        assert!(log.contains("P6"), "the log has content: {log}");
    }
    for who in [&pki.client, &pki.other_client] {
        for l in who.key_body_lines() {
            assert!(!log.contains(&l), "key line {l} in the log:\n{log}");
            // Also not in escaped form split across CRLF.
            if l.len() >= 32 {
                assert!(
                    !log.contains(&l[..32]),
                    "key fragment {} in the log",
                    &l[..32]
                );
            }
        }
    }
}

// ---- the vendor app note's three TLS client examples -------------------------------------------

/// Example 1's "web email": an SMTP-style greeting, `QUIT`, goodbye, close.
struct Mail {
    quit: bool,
}

impl App for Mail {
    fn on_open(&mut self) -> Action {
        Action::send(&b"220 localhost ESMTP eswifi-e2e\r\n"[..])
    }
    fn on_data(&mut self, data: &[u8]) -> Action {
        if !self.quit && data.starts_with(b"QUIT") {
            self.quit = true;
            return Action::send_and_close(&b"221 Bye\r\n"[..]);
        }
        Action::send(&b"500 unknown\r\n"[..])
    }
}

/// Example 2's HTTPS: one GET, one response.
struct Https {
    req: Vec<u8>,
}

const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello, host\n";

impl App for Https {
    fn on_data(&mut self, data: &[u8]) -> Action {
        self.req.extend_from_slice(data);
        if self.req.ends_with(b"\r\n\r\n") {
            assert!(self
                .req
                .starts_with(b"GET / HTTP/1.1\r\nHost: localhost\r\n"));
            return Action::send(HTTP_RESPONSE);
        }
        Action::default()
    }
}

/// The app note's host sequence: `P1=3`, `D0=<server>`, `P4=<port>`, `P9=<level>`, `P6=1`.
fn seed_start(emu: &mut Emu, port: u16, p9: u8) {
    emu.expect(b"P1=3\r", OK);
    emu.expect(b"D0=localhost\r", &ok("127.0.0.1"));
    emu.expect(format!("P4={port}\r").as_bytes(), OK);
    emu.expect(format!("P9={p9}\r").as_bytes(), OK);
    emu.expect(b"P6=1\r", OK);
}

#[test]
fn vendor_app_note_three_tls_client_examples() {
    let pki = pki();
    let mail = TlsServer::start(
        server_config(&pki.self_signed, None, Versions::Both),
        || Box::new(Mail { quit: false }),
    );
    let https = TlsServer::start(server_config(&pki.server, None, Versions::Both), || {
        Box::new(Https { req: Vec::new() })
    });
    let mutual = TlsServer::echo(server_config(
        &pki.server,
        Some(&pki.ca.cert_pem),
        Versions::Both,
    ));
    let mut emu = Emu::start();
    join(&mut emu);

    // "TLS CA/Certificate/Key Example".
    emu.expect(b"PF=0\r", OK);
    for (item, pem) in [
        (0, &pki.ca.cert_pem),
        (1, &pki.client.cert_pem),
        (2, &pki.client.key_pem),
    ] {
        let mut req = format!("PG=0,{item},{:04}\r", pem.len()).into_bytes();
        req.extend_from_slice(pem.as_bytes());
        emu.expect(&req, OK);
    }
    emu.expect(b"PE=0\r", &pe("0,0,0"));

    // 1. No verification (the server's self-signed certificate is taken as is).
    seed_start(&mut emu, mail.port(), 0);
    emu.expect(b"R2=500\r", OK);
    let greeting = b"220 localhost ESMTP eswifi-e2e\r\n";
    assert_bytes(
        &emu.recv_exact(greeting.len(), SECS).0,
        greeting,
        "greeting",
    );
    emu.send(b"QUIT\r\n");
    assert_bytes(&emu.recv_exact(9, SECS).0, b"221 Bye\r\n", "goodbye");
    assert_bytes(&r0_until_not_empty(&mut emu, 30), CLOSED, "after goodbye");
    emu.expect(b"P6=0\r", OK);

    // 2. Root CA verification.
    seed_start(&mut emu, https.port(), 1);
    emu.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_bytes(
        &emu.recv_exact(HTTP_RESPONSE.len(), SECS).0,
        HTTP_RESPONSE,
        "HTTPS response",
    );
    emu.expect(b"P6=0\r", OK);
    // The same example against the self-signed server fails verification.
    emu.expect(b"P1=3\r", OK);
    emu.expect(b"D0=localhost\r", &ok("127.0.0.1"));
    emu.expect(format!("P4={}\r", mail.port()).as_bytes(), OK);
    emu.expect(b"P9=1\r", OK);
    emu.expect(b"P6=1\r", SIMPLE_FAIL);

    // 3. Full verification: root CA, client certificate and key.
    seed_start(&mut emu, mutual.port(), 2);
    echo_roundtrip(&mut emu, b"full verification");
    emu.expect(b"P6=0\r", OK);

    for (name, server) in [("mail", &mail), ("https", &https), ("mutual", &mutual)] {
        let log = server.log();
        assert!(!log.sessions.is_empty(), "{name}: {log:?}");
        assert_eq!(
            log.sessions[0].sni.as_deref(),
            Some("localhost"),
            "{name}: SNI from D0"
        );
    }
    assert_eq!(mail.log().sessions[0].client_subject, None);
    assert_eq!(https.log().sessions[0].client_subject, None);
    assert_eq!(
        mutual.log().sessions[0].client_subject.as_deref(),
        Some(pki.client.subject.as_str())
    );
    emu.stop();
}
