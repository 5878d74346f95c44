//! X.509 **version 1** certificates, as `openssl x509 -req` makes them without an extension file
//! (what most tutorials produce). rcgen only writes v3, so these are built here with a small DER
//! writer and signed with ring (ECDSA P-256 / SHA-256). Shared by the core's unit tests
//! (`src/module/tls/tests.rs` includes this file) and the end-to-end tests.

#![allow(dead_code)]

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

/// A v1 certificate and its key.
pub struct V1Cert {
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_der: Vec<u8>,
}

impl V1Cert {
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_der)
    }
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn name(cn: &str) -> Vec<u8> {
    // Name ::= SEQUENCE { SET { SEQUENCE { OID commonName, UTF8String } } }
    let atv = seq(&[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, cn.as_bytes())]);
    seq(&[der(0x31, &atv)])
}

/// ecdsa-with-SHA256, no parameters.
fn ecdsa_sha256() -> Vec<u8> {
    seq(&[der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])])
}

/// A v1 certificate for `subject`, signed by `issuer` (itself when None), valid from 2020 to 2049.
pub fn v1_cert(subject: &str, issuer: Option<(&str, &V1Cert)>) -> V1Cert {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key pair");
    let spki = seq(&[
        seq(&[
            der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        ]),
        der(0x03, &[&[0u8][..], key.public_key().as_ref()].concat()),
    ]);
    let validity = seq(&[der(0x17, b"200101000000Z"), der(0x18, b"20491231235959Z")]);
    let issuer_name = issuer.map_or(subject, |(n, _)| n);
    // No [0] version field: that is what makes it v1.
    let tbs = seq(&[
        der(0x02, &[0x01, 0x23]),
        ecdsa_sha256(),
        name(issuer_name),
        validity,
        name(subject),
        spki,
    ]);
    let signer = match issuer {
        Some((_, ca)) => {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &ca.key_der, &rng)
                .expect("issuer key")
        }
        None => key,
    };
    let sig = signer.sign(&rng, &tbs).expect("sign");
    let cert_der = seq(&[
        tbs,
        ecdsa_sha256(),
        der(0x03, &[&[0u8][..], sig.as_ref()].concat()),
    ]);
    V1Cert {
        cert_der,
        key_der: pkcs8.as_ref().to_vec(),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | b as u32) << (8 * (3 - chunk.len()));
        for k in 0..4 {
            if k <= chunk.len() {
                b64.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
