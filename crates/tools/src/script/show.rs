//! How bytes and secrets are shown to a person (layer: pure): escaping, shortening, and redaction
//! of the Wi-Fi passphrases (`C2`, `A2`, and their fields in `C?`/`A?`) and of any value the runner
//! was told is secret.

/// Bytes as printable ASCII: `\r`, `\n`, `\t`, `\\`, `\"`, `\xNN` for the rest.
pub(crate) fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) const MASK: &str = "********";

/// Mnemonics whose argument is a passphrase.
const SECRET_COMMANDS: [&str; 2] = ["C2=", "A2="];

/// A command line as shown: the passphrase of `C2=`/`A2=` masked.
pub(crate) fn command_text(head: &str) -> String {
    for m in SECRET_COMMANDS {
        if let Some(rest) = head.strip_prefix(m) {
            return if rest.is_empty() {
                head.to_string()
            } else {
                format!("{m}{MASK}")
            };
        }
    }
    head.to_string()
}

/// The passphrase a command line carries, if any (to redact it wherever else it shows up).
pub(crate) fn command_secret(head: &[u8]) -> Option<Vec<u8>> {
    SECRET_COMMANDS.iter().find_map(|m| {
        let rest = head.strip_prefix(m.as_bytes())?;
        let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
        (!rest.is_empty()).then(|| rest.to_vec())
    })
}

/// A reply payload as shown: `C?` hides field 2 (password), `A?` field 5 (key).
pub(crate) fn reply_payload(command: &str, payload: &[u8]) -> Vec<u8> {
    let field = match command.trim_end() {
        "C?" => 1,
        "A?" => 4,
        _ => return payload.to_vec(),
    };
    let mut fields: Vec<&[u8]> = payload.split(|&c| c == b',').collect();
    if let Some(f) = fields.get_mut(field) {
        if !f.is_empty() {
            *f = MASK.as_bytes();
        }
    }
    fields.join(&b","[..])
}

/// Replace every occurrence of each secret (3 bytes or longer: shorter ones would blank out
/// ordinary text) with the mask.
pub(crate) fn redact(b: &[u8], secrets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b.to_vec();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        let mut i = 0;
        let mut next = Vec::with_capacity(out.len());
        while i < out.len() {
            if out[i..].starts_with(s) {
                next.extend_from_slice(MASK.as_bytes());
                i += s.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

/// Variable names whose values count as secrets.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASS", "SECRET", "KEY", "TOKEN"]
        .iter()
        .any(|w| n.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_shortening() {
        assert_eq!(escape(b"a\r\n\"\\\x00\xff"), "a\\r\\n\\\"\\\\\\x00\\xff");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }

    #[test]
    fn passphrases_never_show() {
        assert_eq!(command_text("C2=hunter22"), "C2=********");
        assert_eq!(command_text("C2="), "C2=");
        assert_eq!(command_text("C1=lab"), "C1=lab");
        assert_eq!(command_secret(b"A2=apkey123\r"), Some(b"apkey123".to_vec()));
        assert_eq!(
            reply_payload("C?", b"lab,hunter22,3,1,0,127.0.0.1"),
            b"lab,********,3,1,0,127.0.0.1"
        );
        assert_eq!(reply_payload("C?", b"lab,,0"), b"lab,,0");
        assert_eq!(
            reply_payload("A?", b"ap,127.0.10.1,1,3,k3y,1,24,0"),
            b"ap,127.0.10.1,1,3,********,1,24,0"
        );
        assert_eq!(
            redact(b"x hunter22 y hunter22", &[b"hunter22".to_vec()]),
            b"x ******** y ********"
        );
        assert_eq!(redact(b"a,b", &[b"a".to_vec()]), b"a,b");
        assert!(is_secret_name("PASSPHRASE") && is_secret_name("api_key"));
        assert!(!is_secret_name("SSID"));
    }
}
