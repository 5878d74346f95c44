//! In-memory TLS handshakes against rustls servers, in virtual time.
