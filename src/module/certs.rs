//! The module's TLS certificate sets (layer: core, pure data). Sets 0-2 are one-time programmable per
//! item; set 3 exists only on firmware profiles that make it re-writable (C6). Persistence lives in
//! `crate::certstore`; this type only holds what the module knows.

/// Number of sets addressable (0..=3); whether set 3 is usable depends on the firmware profile.
pub const SET_COUNT: usize = 4;

/// Largest item `PG` accepts (certificate chains and 4096-bit keys fit).
pub const MAX_ITEM: usize = 16 * 1024;

/// One item of a set, numbered as `PG` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Ca = 0,
    Cert = 1,
    Key = 2,
}

impl Item {
    pub const ALL: [Item; 3] = [Item::Ca, Item::Cert, Item::Key];

    pub fn from_code(c: u8) -> Option<Item> {
        Item::ALL.get(c as usize).copied()
    }

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

/// Contents of all sets: the exact bytes the host programmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSets {
    items: [[Option<Vec<u8>>; 3]; SET_COUNT],
}

impl CertSets {
    pub fn get(&self, set: usize, item: Item) -> Option<&[u8]> {
        self.items.get(set)?[item as usize].as_deref()
    }

    pub fn put(&mut self, set: usize, item: Item, data: Vec<u8>) {
        self.items[set][item as usize] = Some(data);
    }

    pub fn clear(&mut self, set: usize, item: Item) {
        self.items[set][item as usize] = None;
    }

    /// True when no item of `set` is programmed.
    pub fn is_blank(&self, set: usize) -> bool {
        self.items[set].iter().all(Option::is_none)
    }
}
