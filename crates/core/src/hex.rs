//! Lower-case hex (layer: pure helper): the digest in a certificate item's header, the strings of
//! the first saved-settings format, and what tests and benches print.

/// `data` as lower-case hex, two digits a byte.
pub fn encode(data: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of a hex string (either case); None when it is not one.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::encode(b"\x00\x0fA\xff"), "000f41ff");
        assert_eq!(super::decode("000f41FF"), Some(b"\x00\x0fA\xff".to_vec()));
        assert_eq!(super::decode(""), Some(vec![]));
        assert_eq!(super::decode("abc"), None);
        assert_eq!(super::decode("zz"), None);
        assert_eq!(super::decode("+1"), None, "from_str_radix takes a sign");
    }
}
