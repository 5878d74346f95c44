//! A certificate set's [`Item`] and the on-disk form of one (layer: wire, pure): a one-line header
//! `eswifi-emu-otp 1 <len> <sha256>` and then exactly the bytes the host programmed. The store
//! (the emulator's `certstore`) writes and reads files; this codec decides what a complete item is.

/// One item of a certificate set, numbered as `PG` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Ca = 0,
    Cert = 1,
    Key = 2,
}

impl Item {
    pub const ALL: [Item; 3] = [Item::Ca, Item::Cert, Item::Key];

    /// File stem in the on-disk store.
    pub fn file_stem(self) -> &'static str {
        match self {
            Item::Ca => "ca",
            Item::Cert => "cert",
            Item::Key => "key",
        }
    }

    /// Human name for logs.
    pub fn label(self) -> &'static str {
        match self {
            Item::Ca => "root CA",
            Item::Cert => "client certificate",
            Item::Key => "client key",
        }
    }
}

const MAGIC: &str = "eswifi-emu-otp 1";

/// The largest item `PG` programs: a store file holding more is not one the module wrote.
pub const MAX_ITEM: usize = crate::iwin::command::MAX_CERT_ITEM;

/// The largest item file: the header line (magic, length, SHA-256: under 100 bytes) and
/// [`MAX_ITEM`] bytes.
pub const MAX_ITEM_FILE: u64 = MAX_ITEM as u64 + 128;

fn sha256_hex(data: &[u8]) -> String {
    crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// One item file's bytes: the header line, then the data as programmed.
pub fn encode_item(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{MAGIC} {} {}\n", data.len(), sha256_hex(data)).into_bytes();
    v.extend_from_slice(data);
    v
}

/// Why a file is not a complete item (torn, corrupt, or not one at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError {
    NoHeader,
    HeaderNotText,
    /// The header line is not `eswifi-emu-otp 1 <len> <sha256>`.
    BadHeader(String),
    BadLength(String),
    /// The header's length is not what the file holds (a torn write).
    Torn {
        header: usize,
        file: usize,
    },
    DigestMismatch,
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemError::NoHeader => f.write_str("no header line"),
            ItemError::HeaderNotText => f.write_str("header is not text"),
            ItemError::BadHeader(h) => write!(f, "header {h:?} is not `{MAGIC} <len> <sha256>`"),
            ItemError::BadLength(l) => write!(f, "bad length {l:?}"),
            ItemError::Torn { header, file } => {
                write!(f, "header says {header} bytes, file holds {file}")
            }
            ItemError::DigestMismatch => f.write_str("SHA-256 digest does not match the contents"),
        }
    }
}

impl std::error::Error for ItemError {}

/// The data of an item file, or why it is not a complete item.
pub fn decode_item(bytes: &[u8]) -> Result<Vec<u8>, ItemError> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(ItemError::NoHeader)?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| ItemError::HeaderNotText)?;
    let bad_header = || ItemError::BadHeader(header.to_string());
    let rest = header
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(bad_header)?;
    let (len, digest) = rest.split_once(' ').ok_or_else(bad_header)?;
    let len: usize = len
        .parse()
        .map_err(|_| ItemError::BadLength(len.to_string()))?;
    let data = &bytes[nl + 1..];
    if data.len() != len {
        return Err(ItemError::Torn {
            header: len,
            file: data.len(),
        });
    }
    if sha256_hex(data) != digest {
        return Err(ItemError::DigestMismatch);
    }
    Ok(data.to_vec())
}
