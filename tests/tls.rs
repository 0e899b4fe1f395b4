//! TLS termination end to end: a gateway with `[server.tls]` on a loopback
//! port, certificates made by rcgen into a temp dir, and a rustls client:
//! SNI choice, ALPN h2 and http/1.1, TLS 1.2 and 1.3, reload on file change
//! without dropping open connections, a bad reload keeping the last good
//! certificates, mTLS required and optional, and start-up errors that name
//! the field and file.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore};
use support::{Upstream, eventually, table};
use switchyard::config::{self, Origin};
use switchyard::tls::TlsTerminator;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// A test CA that signs leaf certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf for `names`: (cert PEM, key PEM, cert DER).
    fn leaf(&self, names: &[&str]) -> (String, String, CertificateDer<'static>) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn write_leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let (cert, key, der) = self.leaf(names);
        std::fs::write(dir.join(format!("{stem}.crt")), cert).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key).unwrap();
        der
    }
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_string()
}

/// A gateway with plain and TLS listeners; the TLS settings are `tls`
/// (the body of `[server.tls]` and its certificates).
struct TlsGateway {
    tls_addr: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

impl TlsGateway {
    async fn start(up: &Upstream, tls: &str) -> TlsGateway {
        let mut text = table()
            .version("v1", "current", "")
            .pool("v1", "v1", up)
            .route("api", "/api/", "v1", "")
            .toml();
        text.push_str(tls);
        let doc =
            config::load(&text, Origin::Embedded("tls")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let settings = doc.server.tls.clone().expect("[server.tls]");
        let terminator = Arc::new(TlsTerminator::load(&settings).unwrap());
        let tls_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tls_listener.set_nonblocking(true).unwrap();
        let tls_addr = tls_listener.local_addr().unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let options = switchyard::ServeOptions {
            tls: Some(switchyard::TlsListeners {
                terminator,
                listeners: vec![tls_listener],
            }),
            ..Default::default()
        };
        let task = tokio::spawn(switchyard::serve_with(
            doc,
            "tls".into(),
            proxy,
            admin,
            shutdown.clone(),
            options,
        ));
        TlsGateway {
            tls_addr,
            admin_addr,
            shutdown,
            task,
        }
    }

    /// The admin listener's metrics.
    async fn metrics(&self) -> support::Metrics {
        let resp = support::raw_exchange(
            self.admin_addr,
            b"GET /metrics HTTP/1.1\r\nhost: admin\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 200);
        support::Metrics(String::from_utf8(resp.body).unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        assert!(self.task.await.unwrap(), "drained");
    }
}

/// A client trusting `ca`, offering `alpn`, with an optional client
/// certificate, limited to `versions`.
fn client_config(
    ca: &Ca,
    alpn: &[&[u8]],
    client_cert: Option<(String, String)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn both() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
}

fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// GET `path` over an established TLS stream with the protocol ALPN chose;
/// returns (status, body) or the error.
async fn get_over(
    stream: TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> Result<(u16, String), hyper::Error> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(stream);
    let req = http::Request::builder()
        .uri(format!("https://{host}{path}"))
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn served_by(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["served_by"]
        .as_str()
        .unwrap()
        .to_string()
}

fn tls_section(dir: &Path, extra: &str) -> String {
    format!(
        "\n[server.tls]\nlisten = \"127.0.0.1:0\"\nreload_poll_ms = 100\n{extra}\n\
         [[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\nserver_names = [\"api.test\"]\n\n\
         [[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\nserver_names = [\"*.wild.test\"]\n",
        path(dir, "api.crt"),
        path(dir, "api.key"),
        path(dir, "wild.crt"),
        path(dir, "wild.key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_serves_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    // `default.test` is in the first certificate but in no server_names:
    // it is what a client with an unknown SNI gets.
    let api = ca.write_leaf(dir.path(), "api", &["api.test", "default.test"]);
    let wild = ca.write_leaf(dir.path(), "wild", &["*.wild.test"]);
    let up = Upstream::spawn("v1").await;
    let gw = TlsGateway::start(&up, &tls_section(dir.path(), "")).await;

    let h2 = client_config(&ca, &[b"h2", b"http/1.1"], None, &both());
    let s = connect(gw.tls_addr, h2.clone(), "api.test").await.unwrap();
    assert_eq!(peer_cert(&s), api);
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = get_over(s, "api.test", "/api/events").await.unwrap();
    assert_eq!((status, served_by(&body).as_str()), (200, "v1"), "{body}");
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    let s = connect(gw.tls_addr, h2.clone(), "x.wild.test")
        .await
        .unwrap();
    assert_eq!(peer_cert(&s), wild, "*.wild.test answers x.wild.test");
    let s = connect(gw.tls_addr, h2, "default.test").await.unwrap();
    assert_eq!(peer_cert(&s), api, "no SNI match: the first certificate");

    let h1 = client_config(&ca, &[b"http/1.1"], None, &both());
    let s = connect(gw.tls_addr, h1, "api.test").await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get_over(s, "api.test", "/api/events").await.unwrap();
    assert_eq!((status, served_by(&body).as_str()), (200, "v1"), "{body}");
    // HTTP/1.1 stayed on the lean path; h2 (negotiated) never tried it.
    assert_eq!(
        gw.metrics()
            .await
            .sum("switchyard_http1_handoffs_total", &[]),
        0.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_both_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    ca.write_leaf(dir.path(), "api", &["api.test"]);
    ca.write_leaf(dir.path(), "wild", &["*.wild.test"]);
    let up = Upstream::spawn("v1").await;
    let gw = TlsGateway::start(&up, &tls_section(dir.path(), "")).await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&ca, &[b"http/1.1"], None, &[version]);
        let s = connect(gw.tls_addr, config, "api.test").await.unwrap();
        assert_eq!(s.get_ref().1.protocol_version(), Some(want));
        let (status, _) = get_over(s, "api.test", "/api/x").await.unwrap();
        assert_eq!(status, 200);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_reload_without_dropping_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    let first = ca.write_leaf(dir.path(), "api", &["api.test"]);
    ca.write_leaf(dir.path(), "wild", &["*.wild.test"]);
    let up = Upstream::spawn("v1").await;
    let gw = TlsGateway::start(&up, &tls_section(dir.path(), "")).await;
    let config = client_config(&ca, &[b"h2"], None, &both());

    // An h2 connection opened before the reload, kept open across it.
    let s = connect(gw.tls_addr, config.clone(), "api.test")
        .await
        .unwrap();
    assert_eq!(peer_cert(&s), first);
    let io = hyper_util::rt::TokioIo::new(s);
    let (mut open, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::builder()
            .uri("https://api.test/api/x")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(open.send_request(get()).await.unwrap().status(), 200);

    // Renewed: same name, new key and certificate.
    let renewed = ca.write_leaf(dir.path(), "api", &["api.test"]);
    assert_ne!(renewed, first);
    eventually("new handshakes get the renewed certificate", || {
        let config = config.clone();
        let renewed = renewed.clone();
        async move {
            let s = connect(gw.tls_addr, config, "api.test").await.unwrap();
            peer_cert(&s) == renewed
        }
    })
    .await;
    assert_eq!(
        open.send_request(get()).await.unwrap().status(),
        200,
        "the connection opened before the reload still serves"
    );

    // A broken renewal (key of another certificate): the last good one stays.
    let (_, other_key, _) = ca.leaf(&["api.test"]);
    std::fs::write(dir.path().join("api.key"), other_key).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let s = connect(gw.tls_addr, config.clone(), "api.test")
        .await
        .unwrap();
    assert_eq!(
        peer_cert(&s),
        renewed,
        "a failed reload keeps the last good certificate"
    );
    let (status, _) = get_over(s, "api.test", "/api/x").await.unwrap();
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_required_refuses_clients_without_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    ca.write_leaf(dir.path(), "api", &["api.test"]);
    ca.write_leaf(dir.path(), "wild", &["*.wild.test"]);
    let clients = Ca::new("partner client CA");
    std::fs::write(dir.path().join("clients.crt"), clients.issuer.pem()).unwrap();
    let stranger = Ca::new("someone else's CA");
    let up = Upstream::spawn("v1").await;
    let extra = format!("client_ca = \"{}\"", path(dir.path(), "clients.crt"));
    let gw = TlsGateway::start(&up, &tls_section(dir.path(), &extra)).await;

    let (cert, key, _) = clients.leaf(&["vendor-42"]);
    let with_cert = client_config(&ca, &[b"http/1.1"], Some((cert, key)), &both());
    let s = connect(gw.tls_addr, with_cert, "api.test").await.unwrap();
    let (status, _) = get_over(s, "api.test", "/api/x").await.unwrap();
    assert_eq!(status, 200);

    let requests = up.requests();
    let (cert, key, _) = stranger.leaf(&["intruder"]);
    let wrong_ca = client_config(&ca, &[b"http/1.1"], Some((cert, key)), &both());
    let without = client_config(&ca, &[b"http/1.1"], None, &both());
    for config in [wrong_ca, without] {
        // TLS 1.3 clients finish first; the refusal arrives on first read.
        let refused = match connect(gw.tls_addr, config, "api.test").await {
            Err(_) => true,
            Ok(s) => get_over(s, "api.test", "/api/x").await.is_err(),
        };
        assert!(
            refused,
            "a client without a certificate from client_ca is refused"
        );
    }
    assert_eq!(
        up.requests(),
        requests,
        "no refused request reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_optional_serves_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    ca.write_leaf(dir.path(), "api", &["api.test"]);
    ca.write_leaf(dir.path(), "wild", &["*.wild.test"]);
    std::fs::write(
        dir.path().join("clients.crt"),
        Ca::new("clients").issuer.pem(),
    )
    .unwrap();
    let up = Upstream::spawn("v1").await;
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"optional\"",
        path(dir.path(), "clients.crt")
    );
    let gw = TlsGateway::start(&up, &tls_section(dir.path(), &extra)).await;
    let without = client_config(&ca, &[b"http/1.1"], None, &both());
    let s = connect(gw.tls_addr, without, "api.test").await.unwrap();
    let (status, _) = get_over(s, "api.test", "/api/x").await.unwrap();
    assert_eq!(status, 200);
    gw.stop().await;
}

fn settings(dir: &Path, extra: &str) -> switchyard::config::TlsSettings {
    let up = "127.0.0.1:9";
    let text = format!(
        "[[versions]]\nname = \"v1\"\nstatus = \"current\"\n[[pools]]\nname = \"v1\"\nversion = \"v1\"\n\
         endpoints = [\"{up}\"]\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\ndefault_version = \"v1\"\n{}",
        tls_section(dir, extra)
    );
    config::load(&text, Origin::Embedded("tls"))
        .unwrap_or_else(|e| panic!("{e}"))
        .server
        .tls
        .unwrap()
}

#[test]
fn unusable_certificate_files_are_named_with_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    ca.write_leaf(dir.path(), "wild", &["*.wild.test"]);
    // Missing certificate file.
    let err = TlsTerminator::load(&settings(dir.path(), ""))
        .unwrap_err()
        .to_string();
    let missing: PathBuf = dir.path().join("api.crt");
    assert!(
        err.starts_with("server.tls.certificates[0].cert: ")
            && err.contains(missing.to_str().unwrap()),
        "{err}"
    );
    // A key that belongs to another certificate.
    ca.write_leaf(dir.path(), "api", &["api.test"]);
    let (_, other_key, _) = ca.leaf(&["api.test"]);
    std::fs::write(dir.path().join("api.key"), other_key).unwrap();
    let err = TlsTerminator::load(&settings(dir.path(), ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("server.tls.certificates[0].key: ") && err.contains("does not match"),
        "{err}"
    );
    // Not PEM at all.
    std::fs::write(dir.path().join("api.crt"), "hello").unwrap();
    let err = TlsTerminator::load(&settings(dir.path(), ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.tls.certificates[0].cert"), "{err}");
}

#[test]
fn tls_settings_are_validated_with_field_paths() {
    let text = "[server.tls]\nlisten = \"nope\"\ncertificates = []\nhandshake_timeout_ms = 0\n\
                [[versions]]\nname = \"v1\"\nstatus = \"current\"\n";
    let err = config::load(text, Origin::Embedded("t"))
        .unwrap_err()
        .to_string();
    for want in [
        "server.tls.listen",
        "server.tls.certificates: at least one certificate",
        "server.tls.handshake_timeout_ms",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    let text = "[server.tls]\nlisten = \"127.0.0.1:0\"\n\
                [[server.tls.certificates]]\ncert = \"a\"\nkey = \"b\"\nserver_names = [\"ok.test\", \"bad name\"]\n\
                [[server.tls.certificates]]\ncert = \"c\"\nkey = \"d\"\nserver_names = [\"OK.test\"]\n\
                [[versions]]\nname = \"v1\"\nstatus = \"current\"\n";
    let err = config::load(text, Origin::Embedded("t"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server.tls.certificates[0].server_names[1]"),
        "{err}"
    );
    assert!(
        err.contains("server.tls.certificates[1].server_names[0]: \"OK.test\" is already served by certificates[0]"),
        "{err}"
    );
}

/// The binary: `switchyard run` with `[server.tls]` binds one TLS listener
/// per worker, logs its address, and reloads certificates on SIGHUP (file
/// polling off here, so only the signal can have done it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_tls_and_reloads_certificates_on_sighup() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    let first = ca.write_leaf(dir.path(), "api", &["api.test"]);
    ca.write_leaf(dir.path(), "wild", &["*.wild.test"]);
    let up = Upstream::spawn("v1").await;
    let mut text = table()
        .server("listen = \"127.0.0.1:0\"")
        .server("admin_listen = \"127.0.0.1:0\"")
        .server("workers = 2")
        .version("v1", "current", "")
        .pool("v1", "v1", &up)
        .route("api", "/api/", "v1", "")
        .toml();
    text.push_str(
        &tls_section(dir.path(), "").replace("reload_poll_ms = 100", "reload_poll_ms = 0"),
    );
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "--log-format",
            "json",
            "run",
            "--config",
            file.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut wait_for = async |message: &str| -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let line = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {message:?} log line"))
                .expect("switchyard exited");
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && event["fields"]["message"] == message
            {
                return event["fields"].clone();
            }
        }
    };
    let addr: std::net::SocketAddr = wait_for("TLS listening").await["tls"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let config = client_config(&ca, &[b"h2"], None, &both());
    let s = connect(addr, config.clone(), "api.test").await.unwrap();
    assert_eq!(peer_cert(&s), first);
    let (status, _) = get_over(s, "api.test", "/api/x").await.unwrap();
    assert_eq!(status, 200);

    let renewed = ca.write_leaf(dir.path(), "api", &["api.test"]);
    let s = connect(addr, config.clone(), "api.test").await.unwrap();
    assert_eq!(
        peer_cert(&s),
        first,
        "no polling: nothing changes before the signal"
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("TLS certificates reloaded").await;
    let s = connect(addr, config, "api.test").await.unwrap();
    assert_eq!(peer_cert(&s), renewed);

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
