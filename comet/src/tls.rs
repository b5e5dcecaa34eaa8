//! WSS: rustls driven sans-IO over the same readiness loop as plain connections. Ciphertext
//! read into the worker's scratch buffer is decrypted into its plaintext buffer; replies and
//! pushes are encrypted into the connection's outbound queue.

use crate::close::CloseReason;
use crate::outbound::{Bound, Full, OutQueue};
use crate::websocket::WsState;
use bytes::Bytes;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("reading certificate {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("reading private key {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and key into a server configuration (ring provider).
pub fn server_config(
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert_file.into(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: key_file.into(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

pub(crate) struct TlsState {
    conn: ServerConnection,
    pub ws: WsState,
}

impl TlsState {
    pub fn new(config: Arc<rustls::ServerConfig>, ws: WsState) -> Result<Self, rustls::Error> {
        Ok(TlsState {
            conn: ServerConnection::new(config)?,
            ws,
        })
    }

    /// Feeds ciphertext; appends the plaintext it yields to `plain`.
    pub fn decrypt(&mut self, mut cipher: &[u8], plain: &mut Vec<u8>) -> Result<(), CloseReason> {
        while !cipher.is_empty() {
            self.conn
                .read_tls(&mut cipher)
                .map_err(|_| CloseReason::Tls)?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(|_| CloseReason::Tls)?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|_| CloseReason::Tls)?;
            }
            if state.peer_has_closed() {
                return Err(CloseReason::ClientClosed);
            }
        }
        Ok(())
    }

    /// Moves any TLS output (handshake messages, encrypted data) to the outbound queue.
    pub fn flush_handshake(&mut self, out: &mut OutQueue, cap: Bound) -> Result<(), Full> {
        if !self.conn.wants_write() {
            return Ok(());
        }
        let mut wire = Vec::new();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut wire).is_err() {
                break;
            }
        }
        out.push(cap, &[&Bytes::from(wire)])
    }

    /// Encrypts plaintext into the outbound queue as one message.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut OutQueue, cap: Bound) -> Result<(), Full> {
        // Writing to rustls' own buffer cannot fail short of memory.
        let _ = self.conn.writer().write_all(plain);
        self.flush_handshake(out, cap)
    }
}
