//! TLS termination (rustls with the aws-lc-rs provider): certificates chosen
//! by SNI, ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3 only, optional client
//! certificates (mTLS), and certificate reload without a restart.
//!
//! The live `rustls::ServerConfig` sits behind an `ArcSwap`: every accepted
//! connection takes the current one for its handshake and keeps it, so a
//! reload (on SIGHUP, or when a watched file's modification time or size
//! changes) affects new handshakes only and never drops a connection. A
//! reload that fails (a missing file, a key that does not match its
//! certificate) is logged and counted, and the last good configuration keeps
//! serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{ClientAuth, TlsSettings};

/// A certificate or CA file that could not be used, with the setting that
/// names it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {file}: {reason}")]
pub struct TlsError {
    /// The config field path, e.g. `server.tls.certificates[0].key`.
    pub field: String,
    /// The file named there.
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

fn fail(field: impl Into<String>, file: &str, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        field: field.into(),
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

/// The TLS listener's configuration and its reload machinery.
pub struct TlsTerminator {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    config: ArcSwap<ServerConfig>,
    /// Modification time and size of every file, as last loaded.
    stamps: Mutex<Vec<Stamp>>,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
}

impl std::fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("listen", &self.settings.listen)
            .field("reloads", &self.reloads())
            .finish_non_exhaustive()
    }
}

impl TlsTerminator {
    /// Loads every certificate, key and CA file named by `settings`; the
    /// first problem found is the error.
    pub fn load(settings: &TlsSettings) -> Result<TlsTerminator, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = build(settings, &provider)?;
        Ok(TlsTerminator {
            settings: settings.clone(),
            provider,
            config: ArcSwap::from_pointee(config),
            stamps: Mutex::new(stamps(settings)),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        })
    }

    /// An acceptor with the current configuration (new handshakes only).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Time allowed for one handshake.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.handshake_timeout_ms)
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads so far (the previous configuration kept serving).
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::Relaxed)
    }

    /// Re-reads every file and swaps the configuration in; on error the
    /// current one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        // Stamps first: a file rewritten while we read it is seen again.
        // Kept even when the build fails: retry on the next change, not on
        // every poll.
        *self.stamps.lock().expect("tls stamps poisoned") = stamps(&self.settings);
        match build(&self.settings, &self.provider) {
            Ok(config) => {
                self.config.store(Arc::new(config));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn changed(&self) -> bool {
        let now = stamps(&self.settings);
        *self.stamps.lock().expect("tls stamps poisoned") != now
    }

    /// Reloads on SIGHUP and whenever a file changes (checked every
    /// `reload_poll_ms`), until `shutdown`. The SIGHUP handler is installed
    /// before this returns (not when the future is first polled), so a
    /// signal sent once the listener is up never meets the default action,
    /// which would end the process.
    pub fn watch(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        self.watch_with(hup, shutdown)
    }

    async fn watch_with(
        self: Arc<Self>,
        mut hup: Option<tokio::signal::unix::Signal>,
        shutdown: CancellationToken,
    ) {
        let poll = Duration::from_millis(self.settings.reload_poll_ms);
        let mut tick = (!poll.is_zero()).then(|| {
            let mut t = tokio::time::interval(poll);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let why = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
                _ = async {
                    match tick.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    if !self.changed() {
                        continue;
                    }
                    "file change"
                }
            };
            match self.reload() {
                Ok(()) => tracing::info!(trigger = why, "TLS certificates reloaded"),
                Err(e) => tracing::error!(
                    trigger = why,
                    error = %e,
                    "TLS certificate reload failed; the previous certificates keep serving"
                ),
            }
        }
    }
}

fn files(settings: &TlsSettings) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = settings
        .certificates
        .iter()
        .flat_map(|c| [PathBuf::from(&c.cert), PathBuf::from(&c.key)])
        .collect();
    out.extend(settings.client_ca.iter().map(PathBuf::from));
    out
}

/// A watched file and its modification time and size (None: unreadable).
type Stamp = (PathBuf, Option<(SystemTime, u64)>);

fn stamps(settings: &TlsSettings) -> Vec<Stamp> {
    files(settings)
        .into_iter()
        .map(|p| {
            let stamp = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, stamp)
        })
        .collect()
}

fn read_certs(field: String, file: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(Path::new(file))
        .map_err(|e| fail(&field, file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&field, file, e))?;
    if certs.is_empty() {
        return Err(fail(field, file, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// Builds a server configuration from the files as they are now.
fn build(settings: &TlsSettings, provider: &Arc<CryptoProvider>) -> Result<ServerConfig, TlsError> {
    let mut resolver = SniResolver::default();
    for (i, c) in settings.certificates.iter().enumerate() {
        let field = format!("server.tls.certificates[{i}]");
        let certs = read_certs(format!("{field}.cert"), &c.cert)?;
        let key = PrivateKeyDer::from_pem_file(Path::new(&c.key))
            .map_err(|e| fail(format!("{field}.key"), &c.key, e))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| fail(format!("{field}.key"), &c.key, e))?;
        let certified = CertifiedKey::new(certs, signing);
        certified.keys_match().map_err(|e| {
            fail(
                format!("{field}.key"),
                &c.key,
                format!("does not match {}: {e}", c.cert),
            )
        })?;
        let certified = Arc::new(certified);
        if resolver.default.is_none() {
            resolver.default = Some(certified.clone());
        }
        for name in &c.server_names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) => resolver
                    .wildcard
                    .insert(suffix.to_string(), certified.clone()),
                None => resolver.exact.insert(name, certified.clone()),
            };
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail("server.tls", &settings.listen, e))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("server.tls.client_ca".into(), ca)? {
                roots
                    .add(cert)
                    .map_err(|e| fail("server.tls.client_ca", ca, e))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            }
            .build()
            .map_err(|e| fail("server.tls.client_ca", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Exact names first, then `*.suffix` (exactly one more label), then the
/// first certificate.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = name {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, suffix)) = name.split_once('.')
                && let Some(k) = self.wildcard.get(suffix)
            {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}
