//! Certificate area (layer: core): the TLS certificate sets, `PF`/`PG`/`PE`/`PA`, and the TLS
//! parameters a `P6=1` takes from the active set. Sets 0-2 are one-time programmable per item; set 3
//! exists only on firmware profiles that make it re-writable (C6). Persistence lives in
//! `crate::certstore` (the driver performs the [`StoreOp`]s); this area only holds what the module
//! knows. Pure.

use super::error::{CertError, TlsError};
use super::io::{StoreOp, StoreReq, WriteError};
use super::tls::{pem_check, TlsParams, TlsServerParams};
use super::{ok, payload, Answer, Busy, Durable, Module, PayloadFor, Step, STORE_TIMEOUT};
use crate::item::Item;
use crate::iwin::command::{CertCmd, Mnemonic, TlsVerify};
use std::time::{Duration, Instant};

/// Number of sets addressable (0..=3); whether set 3 is usable depends on the firmware profile.
pub const SET_COUNT: usize = 4;

/// The sets and the `PF`/`PA` selections.
#[derive(Debug)]
pub(crate) struct Certs {
    /// Contents as programmed (flash: survives `ZR`).
    pub(crate) sets: CertSets,
    /// Active set for TLS (`PF=0,<set>`) and for AWS (`PF=1,<set>`).
    tls_set: u8,
    aws_set: u8,
    /// The AWS set at power-up: 2, or 3 on C6 firmware.
    aws_default: u8,
    /// `PA=1,<name>`: server name to use instead of the `D0` name.
    ca_name: Option<String>,
}

impl Certs {
    /// No set programmed yet; TLS uses set 0, AWS `aws_default`.
    pub(crate) fn new(aws_default: u8) -> Certs {
        let mut c = Certs {
            sets: CertSets::default(),
            tls_set: 0,
            aws_set: aws_default,
            aws_default,
            ca_name: None,
        };
        c.reset_selection();
        c
    }

    /// `ZR` forgets the selections; the sets are flash.
    pub(crate) fn reset_selection(&mut self) {
        self.tls_set = 0;
        self.aws_set = self.aws_default;
        self.ca_name = None;
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

    /// True when no item of `set` is programmed.
    pub(crate) fn is_blank(&self, set: usize) -> bool {
        self.items[set].iter().all(Option::is_none)
    }
}

impl Module {
    pub(super) fn cert_command(&mut self, cmd: CertCmd, now: Instant) -> Step {
        match cmd {
            CertCmd::SetCaName(on, name) => {
                self.certs.ca_name = on.then(|| String::from_utf8_lossy(&name).into_owned());
                ok()
            }
            CertCmd::Availability(set) => self.cert_availability(set),
            CertCmd::Select(None) => {
                payload(format!("{},{}", self.certs.tls_set, self.certs.aws_set))
            }
            CertCmd::Select(Some((func, set))) => {
                if !self.set_usable(set as usize) {
                    return Err(CertError::NoSuchSet(Mnemonic::PF).into());
                }
                if func == 0 {
                    self.certs.tls_set = set;
                } else {
                    self.certs.aws_set = set;
                }
                ok()
            }
            CertCmd::Program { set, item, len } => {
                if !self.set_usable(set as usize) {
                    return Err(CertError::NoSuchSet(Mnemonic::PG).into());
                }
                if len == 0 {
                    // ST's driver sends all three items, empty ones with length 0: leave them alone.
                    return ok();
                }
                self.framer.expect_payload(len);
                let deadline = now + Duration::from_millis(self.cfg.timing.payload_timeout_ms);
                Ok(Answer::Wait(Busy::Payload {
                    to: PayloadFor::Program {
                        set: set as usize,
                        item,
                    },
                    deadline,
                }))
            }
        }
    }

    /// Sets 0-2 always; set 3 only on C6 firmware (or with `[tls] rewritable_set3`).
    fn set_usable(&self, set: usize) -> bool {
        set < 3 || (set == 3 && self.has_set3())
    }

    fn has_set3(&self) -> bool {
        self.profile.rewritable_set3() || self.cfg.tls.rewritable_set3
    }

    fn is_otp(set: usize) -> bool {
        set < 3
    }

    /// `PE`: `1` = available, `0` = used. Without a set: one field per set (available = nothing
    /// programmed); with a set: CA, certificate, key.
    fn cert_availability(&self, set: Option<u8>) -> Step {
        let bit = |free: bool| if free { "1" } else { "0" };
        let sets = &self.certs.sets;
        let fields: Vec<&str> = match set {
            None => {
                let n = if self.has_set3() { 4 } else { 3 };
                (0..n)
                    .map(|s| bit(!Self::is_otp(s) || sets.is_blank(s)))
                    .collect()
            }
            Some(s) if self.set_usable(s as usize) => {
                let s = s as usize;
                Item::ALL
                    .iter()
                    .map(|&i| bit(!Self::is_otp(s) || sets.get(s, i).is_none()))
                    .collect()
            }
            Some(_) => return Err(CertError::NoSuchSet(Mnemonic::PE).into()),
        };
        payload(fields.join(","))
    }

    /// The `PG` payload arrived.
    pub(super) fn program(&mut self, set: usize, item: Item, data: Vec<u8>, now: Instant) -> Step {
        if Self::is_otp(set) {
            if let Some(old) = self.certs.sets.get(set, item) {
                if old == data.as_slice() {
                    log::info!(
                        "set {set}: {} rewritten with identical bytes: Match",
                        item.label()
                    );
                    return payload("[CERTS   ] Match");
                }
                log::warn!(
                    "set {set}: {} is one-time programmable and already holds different bytes ({} vs {} bytes)",
                    item.label(),
                    old.len(),
                    data.len()
                );
                return Err(CertError::Used.into());
            }
        }
        if let Err(why) = pem_check(item, &data) {
            if self.cfg.tls.refuse_non_pem {
                log::error!("set {set}: {} refused: {why}", item.label());
                return Err(CertError::NotPem.into());
            }
            log::warn!(
                "set {set}: {} is not usable PEM ({why}); storing it anyway, as the module would",
                item.label()
            );
        }
        let req = self.next_id(StoreReq);
        self.store_ops.push_back(StoreOp::Item {
            req,
            set,
            item,
            data: data.clone(),
        });
        Ok(Answer::Wait(Busy::Store {
            req,
            what: Durable::Item { set, item, data },
            deadline: now + STORE_TIMEOUT,
        }))
    }

    /// A store write finished for the command in flight.
    pub(super) fn stored(&mut self, what: Durable, result: Result<(), WriteError>) -> Step {
        let (set, item, data) = match what {
            Durable::Settings { data } => return self.settings_stored(data, result),
            Durable::Item { set, item, data } => (set, item, data),
        };
        match result {
            Ok(()) => {
                log::info!(
                    "set {set}: {} programmed ({} bytes)",
                    item.label(),
                    data.len()
                );
                // Said once the write is durable, never before (it may still fail).
                if Self::is_otp(set) && pem_check(item, &data).is_err() {
                    log::warn!(
                        "set {set}: {} holds bytes that are not usable PEM: this one-time slot is \
                         now used",
                        item.label()
                    );
                }
                self.certs.sets.put(set, item, data);
                ok()
            }
            Err(e) => {
                log::error!("set {set}: writing the {} failed: {e}", item.label());
                Err(CertError::WriteFailed.into())
            }
        }
    }

    /// A store result after its command gave up (timeout) or the module reset. What it wrote is
    /// durable all the same, so a programmed item (or saved settings) is known from now on.
    pub(super) fn late_store_result(&mut self, req: StoreReq, result: Result<(), WriteError>) {
        log::warn!("store request #{req} finished after its command ended: {result:?}");
        let Some((r, what)) = self.orphan_store.take() else {
            return;
        };
        if r != req {
            self.orphan_store = Some((r, what));
            return;
        }
        if result.is_err() {
            return;
        }
        match what {
            Durable::Item { set, item, data } => {
                log::warn!("set {set}: {} is programmed after all", item.label());
                self.certs.sets.put(set, item, data);
            }
            Durable::Settings { data } => self.saved = Some(data),
        }
    }

    /// Only `[tls] max_sockets` sockets may use TLS at once (the firmware: one).
    fn tls_slot(&self, i: usize) -> Result<(), TlsError> {
        let max = self.cfg.tls.max_sockets as usize;
        let busy: Vec<usize> = (0..self.sockets.len())
            .filter(|&j| j != i && self.sockets[j].uses_tls())
            .collect();
        if busy.len() >= max {
            log::warn!(
                "socket {i}: TLS refused: {max} TLS socket(s) allowed, in use by socket {}",
                busy[0]
            );
            return Err(TlsError::InUse(busy[0]));
        }
        Ok(())
    }

    /// The TLS server parameters for a `P5=1` on socket `i` (`[tls] server`): the active set's
    /// certificate and key as the identity, its root CA for client certificates (`P9` ≥ 1; required
    /// with `P9=2`).
    pub(super) fn tls_server_params(&self, i: usize) -> Result<TlsServerParams, TlsError> {
        self.tls_slot(i)?;
        let verify = self.sockets[i].tls_verify;
        let set = self.certs.tls_set as usize;
        let sets = &self.certs.sets;
        let (ca, cert, key) = (
            sets.get(set, Item::Ca),
            sets.get(set, Item::Cert),
            sets.get(set, Item::Key),
        );
        let (Some(cert), Some(key)) = (cert, key) else {
            log::warn!(
                "socket {i}: a TLS server needs the certificate and key of set {set}, which lacks {}",
                if cert.is_none() { "the certificate" } else { "the key" }
            );
            return Err(TlsError::NoCertOrKey);
        };
        if verify == TlsVerify::Required && ca.is_none() {
            log::warn!(
                "socket {i}: P9=2 checks client certificates against the root CA of set {set}, which has none"
            );
            return Err(TlsError::NoCertOrKey);
        }
        let ca = if verify == TlsVerify::None { None } else { ca };
        log::info!(
            "socket {i}: TLS server with set {set}, P9={} ({})",
            verify.code(),
            match (verify, ca.is_some()) {
                (TlsVerify::Required, _) => "client certificate required",
                (TlsVerify::Optional, true) => "client certificate verified if presented",
                _ => "no client certificate",
            }
        );
        Ok(TlsServerParams {
            set,
            verify,
            cert: cert.to_vec(),
            key: key.to_vec(),
            ca: ca.map(<[u8]>::to_vec),
        })
    }

    /// The TLS parameters for a `P6=1` on socket `i`, or why the active set cannot give them.
    pub(super) fn tls_params(&self, i: usize) -> Result<TlsParams, TlsError> {
        let s = &self.sockets[i];
        self.tls_slot(i)?;
        let set = self.certs.tls_set as usize;
        let sets = &self.certs.sets;
        let (ca, cert, key) = (
            sets.get(set, Item::Ca),
            sets.get(set, Item::Cert),
            sets.get(set, Item::Key),
        );
        if s.tls_verify == TlsVerify::Required {
            let missing: Vec<&str> = [(ca, Item::Ca), (cert, Item::Cert), (key, Item::Key)]
                .iter()
                .filter(|(d, _)| d.is_none())
                .map(|(_, it)| it.label())
                .collect();
            if !missing.is_empty() {
                log::warn!(
                    "socket {i}: P9=2 needs a full set, but set {set} lacks: {}",
                    missing.join(", ")
                );
                return Err(TlsError::NoCertOrKey);
            }
        }
        let use_ca = if s.tls_verify == TlsVerify::None {
            None
        } else {
            ca
        };
        let client = match (s.tls_verify, cert, key) {
            (TlsVerify::Required, Some(cert), Some(key)) => Some((cert.to_vec(), key.to_vec())),
            _ => None,
        };
        let server_name = self
            .certs
            .ca_name
            .clone()
            .or_else(|| self.name_of(s.remote_ip));
        log::info!(
            "socket {i}: TLS to {}:{} with set {set}, P9={} ({}), server name {:?}",
            s.remote_ip,
            s.remote_port,
            s.tls_verify.code(),
            match (s.tls_verify, use_ca.is_some()) {
                (TlsVerify::None, _) | (TlsVerify::Optional, false) => "no verification",
                (TlsVerify::Optional, true) => "root CA",
                (TlsVerify::Required, _) => "root CA + client certificate",
            },
            server_name
        );
        Ok(TlsParams {
            set,
            verify: s.tls_verify,
            report_only: s.verify_report_only,
            ca: use_ca.map(<[u8]>::to_vec),
            client,
            server_name,
            check_hostname: self.cfg.tls.check_hostname,
        })
    }
}
