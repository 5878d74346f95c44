//! A byte queue drained into a non-blocking writer (layer: edge helper, no IO of its own). Used for
//! each TCP connection and for each serial line, whose writes can stop at `WouldBlock` mid-buffer.

use std::io;

/// Bytes accepted from the core but not yet taken by the kernel.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    buf: Vec<u8>,
    /// Start of the unsent bytes in `buf`.
    pos: usize,
    /// Total bytes ever taken by the writer; lets callers tell when a given push has gone out.
    written: u64,
}

impl WriteQueue {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Forget the unsent bytes (their reader is gone); returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len();
        self.buf.clear();
        self.pos = 0;
        n
    }

    /// Unsent bytes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Total bytes ever pushed (written plus unsent).
    pub(crate) fn pushed(&self) -> u64 {
        self.written + self.len() as u64
    }

    /// Write until the queue is empty or `write` reports `WouldBlock` (not an error: the caller waits
    /// for writability). `Interrupted` is retried; any other error is returned.
    pub(crate) fn flush(
        &mut self,
        write: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.flush_limited(usize::MAX, write).map(|_| ())
    }

    /// [`WriteQueue::flush`], writing at most `limit` bytes; returns how many were written.
    pub(crate) fn flush_limited(
        &mut self,
        limit: usize,
        mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut total = 0;
        while self.pos < self.buf.len() && total < limit {
            let end = self.buf.len().min(self.pos.saturating_add(limit - total));
            match write(&self.buf[self.pos..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    self.written += n as u64;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= self.buf.len() / 2 {
            // Compact once the sent prefix dominates, so a slow reader costs O(n) overall.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_and_would_block() {
        let mut q = WriteQueue::default();
        q.push(b"hello ");
        q.push(b"world");
        let mut sink = Vec::new();
        let mut budget = 4;
        q.flush(|b| {
            if budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(3).min(budget);
            budget -= n;
            sink.extend_from_slice(&b[..n]);
            Ok(n)
        })
        .expect("flush");
        assert_eq!(sink, b"hell");
        assert_eq!((q.written(), q.len(), q.pushed()), (4, 7, 11));
        q.flush(|b| {
            sink.extend_from_slice(b);
            Ok(b.len())
        })
        .expect("flush");
        assert_eq!(sink, b"hello world");
        assert!(q.is_empty());
        assert_eq!(q.written(), 11);
    }

    #[test]
    fn errors_propagate() {
        let mut q = WriteQueue::default();
        q.push(b"x");
        let mut tries = 0;
        let r = q.flush(|_| {
            tries += 1;
            if tries == 1 {
                Err(io::ErrorKind::Interrupted.into())
            } else {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        });
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::BrokenPipe));
        assert_eq!(q.len(), 1);
    }
}
