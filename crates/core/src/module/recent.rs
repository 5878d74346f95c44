//! A bounded most-recently-used list (layer: core, pure data): what the module remembers of a few
//! peers — the soft AP's stations, a UDP server's senders, the names `D0` resolved. When it is full
//! the entry touched longest ago is forgotten first.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub(crate) struct Recent<K, V = ()> {
    /// Least recently touched first.
    entries: VecDeque<(K, V)>,
    cap: usize,
}

impl<K: PartialEq, V> Recent<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Recent {
            entries: VecDeque::new(),
            cap,
        }
    }

    /// Note `key` (with `value`, which replaces any older one) as the most recent; true when it was
    /// not known (new, or forgotten since).
    pub(crate) fn touch(&mut self, key: K, value: V) -> bool {
        let known = match self.entries.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => {
                if self.entries.len() >= self.cap {
                    self.entries.pop_front();
                }
                false
            }
        };
        self.entries.push_back((key, value));
        !known
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The keys, least recently touched first.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_touched_is_forgotten_first() {
        let mut r = Recent::new(3);
        assert!(r.touch(1, "a"));
        assert!(r.touch(2, "b"));
        assert!(r.touch(3, "c"));
        assert!(!r.touch(1, "a2"), "known: moved to the end, value replaced");
        assert!(r.touch(4, "d"), "full: 2 goes");
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), [3, 1, 4]);
        assert_eq!(r.get(&1), Some(&"a2"));
        assert_eq!(r.get(&2), None);
        assert!(r.touch(2, "b"), "forgotten, so new again");
        r.clear();
        assert_eq!(r.keys().count(), 0);
    }
}
