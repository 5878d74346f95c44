//! The certificate-store worker (layer: edge): `PG` and `Z1` writes run on a thread of their own, so
//! an fsync never holds up a serial line. It wakes the loop with the net stack's waker; the loop
//! collects results every turn.

use crate::certstore::CertStore;
use crate::net::ModuleIdx;
use eswifi_core::module::io::{StoreOp, StoreReq, WriteError};
use std::io;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

/// A finished write: the module, its request and the outcome.
pub(super) type Done = (ModuleIdx, StoreReq, Result<(), WriteError>);

pub(super) struct StoreWorker {
    jobs: mpsc::Sender<(ModuleIdx, CertStore, StoreOp)>,
    done: mpsc::Receiver<Done>,
    /// Each module's store (none: its writes fail).
    stores: Vec<Option<CertStore>>,
}

impl StoreWorker {
    pub(super) fn start(waker: Arc<mio::Waker>) -> io::Result<StoreWorker> {
        let (jobs, job_rx) = mpsc::channel::<(ModuleIdx, CertStore, StoreOp)>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("certstore".into())
            .spawn(move || {
                for (idx, store, op) in job_rx {
                    let req = op.req();
                    let failed = |path: PathBuf| {
                        move |e: io::Error| WriteError::Io {
                            path: path.display().to_string(),
                            why: e.to_string(),
                        }
                    };
                    let result = match op {
                        StoreOp::Item {
                            set, item, data, ..
                        } => store
                            .write(set, item, &data)
                            .map_err(failed(store.item_path(set, item))),
                        StoreOp::Settings { data, .. } => store
                            .write_settings(&data)
                            .map_err(failed(store.settings_path())),
                    };
                    if done_tx.send((idx, req, result)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(StoreWorker {
            jobs,
            done,
            stores: Vec::new(),
        })
    }

    /// Give module `idx` its store.
    pub(super) fn set(&mut self, idx: ModuleIdx, store: CertStore) {
        if self.stores.len() <= idx {
            self.stores.resize(idx + 1, None);
        }
        self.stores[idx] = Some(store);
    }

    /// Start a write for module `idx`; an immediate failure (no store) is returned.
    pub(super) fn submit(&self, idx: ModuleIdx, op: StoreOp) -> Option<Done> {
        let req = op.req();
        let sent = match self.stores.get(idx).and_then(Option::as_ref) {
            Some(store) => self.jobs.send((idx, store.clone(), op)).is_ok(),
            None => false,
        };
        (!sent).then_some((idx, req, Err(WriteError::NoStore)))
    }

    /// A write that finished.
    pub(super) fn finished(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }
}
