//! How a pool reaches its endpoints when it is not plain HTTP/1.1: TLS
//! (rustls with the aws-lc-rs provider, ALPN, optional client
//! certificate) and HTTP/2 (`h2` over TLS, `h2c` by prior knowledge).
//!
//! A plain HTTP/1.1 pool has no [`Transport`] at all, so its request path
//! is untouched. Files are read when the table is compiled; a transport
//! whose files cannot be used is kept as broken (logged once) and every
//! connect to it fails with that reason (502), rather than failing the
//! whole table.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::config::{UpstreamProtocol, UpstreamTlsDoc};

/// A pool's compiled transport settings.
pub struct Transport {
    /// Unique per compiled transport: keys its pooled connections, so a
    /// reload with other settings never reuses an old connection.
    pub(crate) id: u64,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) tls: Option<Result<TlsClient, Arc<str>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.as_ref().map(|t| t.as_ref().map(|_| ())))
            .finish()
    }
}

/// A TLS connector and the name endpoints are checked against.
pub(crate) struct TlsClient {
    pub(crate) connector: tokio_rustls::TlsConnector,
    /// None: each endpoint's host.
    pub(crate) server_name: Option<ServerName<'static>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Transport {
    /// The transport for a pool's settings; None for plain HTTP/1.1.
    /// `field` names the pool in logs (`pools[2]`).
    pub fn compile(
        protocol: UpstreamProtocol,
        tls: Option<&UpstreamTlsDoc>,
        field: &str,
    ) -> Option<Arc<Transport>> {
        if protocol == UpstreamProtocol::Http1 && tls.is_none() {
            return None;
        }
        let tls = tls.map(|doc| {
            client(doc, protocol).map_err(|reason| {
                tracing::error!(pool = field, %reason, "upstream TLS settings unusable; connects will fail");
                Arc::<str>::from(reason)
            })
        });
        Some(Arc::new(Transport {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            protocol,
            tls,
        }))
    }

    /// HTTP/2: one shared connection per endpoint per worker.
    pub fn multiplexed(&self) -> bool {
        self.protocol != UpstreamProtocol::Http1
    }

    /// `https` over TLS, else `http`.
    pub(crate) fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }
}

/// The system's root certificates, read once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading a system root certificate failed");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, "system root certificates loaded");
            Arc::new(roots)
        })
        .clone()
}

fn certs(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(Path::new(file))
        .map_err(|e| format!("{file}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file}: no PEM certificate in it"));
    }
    Ok(certs)
}

fn client(doc: &UpstreamTlsDoc, protocol: UpstreamProtocol) -> Result<TlsClient, String> {
    let roots = match &doc.ca_file {
        Some(file) => {
            let mut roots = RootCertStore::empty();
            for c in certs(file)? {
                roots.add(c).map_err(|e| format!("{file}: {e}"))?;
            }
            Arc::new(roots)
        }
        None => system_roots(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match (&doc.client_cert, &doc.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key =
                PrivateKeyDer::from_pem_file(Path::new(key)).map_err(|e| format!("{key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert/client_key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => vec![b"http/1.1".to_vec()],
    };
    let server_name = doc
        .server_name
        .as_deref()
        .map(|n| ServerName::try_from(n.to_string()).map_err(|e| format!("server_name: {e}")))
        .transpose()?;
    Ok(TlsClient {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}
