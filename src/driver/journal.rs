//! The transcript as the driver writes it (layer: edge): the module's own records, and the
//! driver's notes (a host attached or left, a power cycle, a rate switch, a fault), each in the
//! order it happened. Without `--trace` every call is a no-op.

use crate::net::ModuleIdx;
use crate::trace::Tracer;
use eswifi_core::module::TraceRecord;
use std::time::Instant;

#[derive(Default)]
pub(super) struct Journal {
    tracer: Option<Tracer>,
}

impl Journal {
    pub(super) fn new(tracer: Option<Tracer>) -> Journal {
        Journal { tracer }
    }

    pub(super) fn record(&mut self, k: ModuleIdx, r: &TraceRecord) {
        if let Some(t) = &mut self.tracer {
            t.record(k, r);
        }
    }

    pub(super) fn note(&mut self, k: ModuleIdx, at: Instant, text: &str) {
        if let Some(t) = &mut self.tracer {
            t.note(k, at, text);
        }
    }
}
