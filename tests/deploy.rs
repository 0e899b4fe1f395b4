//! The deployment files against the binary (issue 8): the Kubernetes
//! manifests (`k8s/base`, the `wedding-season` overlay), `docker/compose.yaml`
//! and `docker/Dockerfile` must use the ports the gateway listens on, the
//! probe paths its admin listener answers, env var names it reads and
//! commands its CLI accepts. The truth comes from the code: the CLI's clap
//! definition (env names, flags, subcommands, parsed for real), the
//! `[server]` settings of the files as `config::load` reads them, and a
//! gateway serving the bootstrap table. `.ci/manifests.sh` validates the
//! same files against the Kubernetes schemas.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use support::TestGateway;
use switchyard::cli::{Cli, Command, Overrides};
use switchyard::config::{self, Document, Origin};
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file, with `<<` merge keys resolved (compose
/// uses them; the YAML crate keeps them as plain keys).
fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_iter()
        .map(merge_keys)
        .filter(|d| !d.is_null())
        .collect()
}

fn merge_keys(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut inherited = Vec::new();
            for (k, v) in h {
                if k.as_str() == Some("<<") {
                    inherited.push(merge_keys(v));
                } else {
                    out.insert(k, merge_keys(v));
                }
            }
            for base in inherited {
                let bases = match base {
                    Yaml::Array(a) => a,
                    b => vec![b],
                };
                for b in bases {
                    let Yaml::Hash(b) = b else {
                        panic!("<< of a non-mapping")
                    };
                    for (k, v) in b {
                        if !out.contains_key(&k) {
                            out.insert(k, v);
                        }
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

fn s(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {y:?}"))
}

fn int(y: &Yaml) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("expected an integer, got {y:?}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("expected a list, got {y:?}"))
}

fn strings(y: &Yaml) -> Vec<String> {
    list(y).iter().map(|v| s(v).to_string()).collect()
}

fn find<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// Every env var the binary reads: the ones clap declares on any
/// (sub)command, plus the admin token read by the library.
fn declared_env() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(e) = a.get_env() {
                out.insert(e.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out.insert(switchyard::admin::ADMIN_TOKEN_ENV.to_string());
    for sure in [
        "SWITCHYARD_LISTEN",
        "SWITCHYARD_ADMIN_LISTEN",
        "SWITCHYARD_CONFIG",
    ] {
        assert!(out.contains(sure), "clap walk found {out:?}");
    }
    out
}

/// Env names in a deployment file: `SWITCHYARD_*` ones must be read by the
/// binary; others must be on the short list of ones we mean to set.
fn check_env_names<'a>(what: &str, names: impl IntoIterator<Item = &'a str>) {
    let declared = declared_env();
    for name in names {
        if name.starts_with("SWITCHYARD_") {
            assert!(
                declared.contains(name),
                "{what}: {name} is not read by switchyard (it reads {declared:?})"
            );
        } else {
            assert_eq!(name, "RUST_LOG", "{what}: unexpected env var {name}");
        }
    }
}

/// `switchyard ARGS` parsed by the real CLI.
fn parse_cli(what: &str, args: &[String]) -> Cli {
    let argv = std::iter::once("switchyard".to_string()).chain(args.iter().cloned());
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{what}: switchyard {args:?}: {e}"))
}

/// What `switchyard run` makes of these env vars: each is passed as the
/// flag clap declares it for, so the real parsers check the values.
fn run_with_env(what: &str, env: &BTreeMap<String, String>) -> (PathBuf, Overrides) {
    let cli = Cli::command();
    let run = cli.find_subcommand("run").expect("run subcommand");
    let flag = |c: &clap::Command, name: &str| {
        c.get_arguments()
            .find(|a| a.get_env() == Some(OsStr::new(name)))
            .map(|a| format!("--{}", a.get_long().expect("long flag")))
    };
    let (mut global, mut sub) = (Vec::new(), vec!["run".to_string()]);
    for (name, value) in env {
        if let Some(f) = flag(&cli, name) {
            global.push(format!("{f}={value}"));
        } else if let Some(f) = flag(run, name) {
            sub.push(format!("{f}={value}"));
        }
    }
    global.extend(sub);
    match parse_cli(what, &global).command {
        Command::Run { config, overrides } => (config, overrides),
        other => panic!("{what}: parsed as {other:?}"),
    }
}

/// A table file as the gateway loads it, with the env overrides applied.
fn effective(path: &str, overrides: &Overrides) -> Document {
    let mut doc = config::load(&read(path), Origin::File(path.into()))
        .unwrap_or_else(|e| panic!("{path} is invalid:\n{e}"));
    overrides.apply(&mut doc);
    config::validate(&doc).unwrap_or_else(|e| panic!("{path} with overrides: {e:?}"));
    doc
}

fn addr(what: &str, a: &str) -> SocketAddr {
    a.parse().unwrap_or_else(|e| panic!("{what}: {a:?}: {e}"))
}

/// `host:port` of a `redis://` URL.
fn redis_host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("redis://").expect("redis:// URL");
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = authority.split_once(':').unwrap_or((authority, "6379"));
    (host.to_string(), port.parse().expect("redis port"))
}

// ---------------------------------------------------------------------------
// Kubernetes

struct Kustomization {
    docs: Vec<Yaml>,
    /// configMapGenerator name -> files / env-file entries.
    files: BTreeMap<String, Vec<String>>,
    envs: BTreeMap<String, BTreeMap<String, String>>,
}

fn base() -> Kustomization {
    let dir = "k8s/base";
    let k = &yaml(&format!("{dir}/kustomization.yaml"))[0];
    let mut docs = Vec::new();
    for file in strings(&k["resources"]) {
        docs.extend(yaml(&format!("{dir}/{file}")));
    }
    // Every manifest in the directory is listed (none forgotten).
    for entry in std::fs::read_dir(repo(dir)).expect("k8s/base") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                strings(&k["resources"]).contains(&name),
                "{dir}/{name} is not in kustomization.yaml"
            );
        }
    }
    let (mut files, mut envs) = (BTreeMap::new(), BTreeMap::new());
    for generator in list(&k["configMapGenerator"]) {
        let name = s(&generator["name"]).to_string();
        if !generator["files"].is_badvalue() {
            let f: Vec<String> = strings(&generator["files"])
                .iter()
                .map(|f| format!("{dir}/{f}"))
                .collect();
            files.insert(name.clone(), f);
        }
        if !generator["envs"].is_badvalue() {
            let mut vars = BTreeMap::new();
            for f in strings(&generator["envs"]) {
                for line in read(&format!("{dir}/{f}")).lines() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (k, v) = line.split_once('=').expect("KEY=value");
                    vars.insert(k.to_string(), v.to_string());
                }
            }
            envs.insert(name, vars);
        }
    }
    Kustomization { docs, files, envs }
}

fn container<'a>(deployment: &'a Yaml, name: &str) -> &'a Yaml {
    list(&deployment["spec"]["template"]["spec"]["containers"])
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Container port by name or number.
fn container_port(c: &Yaml, port: &Yaml) -> i64 {
    let ports = list(&c["ports"]);
    match port {
        Yaml::String(name) => ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .map(|p| int(&p["containerPort"]))
            .unwrap_or_else(|| panic!("no container port named {name}")),
        n => {
            let n = int(n);
            assert!(
                ports.iter().any(|p| int(&p["containerPort"]) == n),
                "port {n} is not a container port"
            );
            n
        }
    }
}

/// The gateway Deployment's env: its ConfigMap's (envFrom) plus its own
/// literal values (secret and field references are left out of the map but
/// their names are returned).
fn gateway_env(k: &Kustomization, c: &Yaml) -> (BTreeMap<String, String>, Vec<String>) {
    let mut env = BTreeMap::new();
    let mut names = Vec::new();
    for from in list(&c["envFrom"]) {
        let cm = s(&from["configMapRef"]["name"]);
        let vars = k
            .envs
            .get(cm)
            .unwrap_or_else(|| panic!("envFrom names {cm}, not a generated env ConfigMap"));
        names.extend(vars.keys().cloned());
        env.extend(vars.clone());
    }
    for e in list(&c["env"]) {
        let name = s(&e["name"]).to_string();
        if let Some(v) = e["value"].as_str() {
            env.insert(name.clone(), v.to_string());
        }
        names.push(name);
    }
    (env, names)
}

/// The bootstrap table the Deployment mounts at `SWITCHYARD_CONFIG`, with
/// the env overrides applied, and the mount paths checked on the way.
fn k8s_settings(k: &Kustomization) -> (Document, BTreeMap<String, String>) {
    let deploy = find(&k.docs, "Deployment", "switchyard");
    let c = container(deploy, "switchyard");
    let (env, names) = gateway_env(k, c);
    check_env_names("k8s Deployment", names.iter().map(String::as_str));
    let (config_path, overrides) = run_with_env("k8s Deployment", &env);
    let mount = list(&c["volumeMounts"])
        .iter()
        .find(|m| Path::new(s(&m["mountPath"])) == config_path)
        .unwrap_or_else(|| panic!("nothing mounted at {}", config_path.display()));
    let volume = list(&deploy["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let cm = s(&volume["configMap"]["name"]);
    let key = s(&mount["subPath"]);
    let file = k.files[cm]
        .iter()
        .find(|f| f.ends_with(&format!("/{key}")))
        .unwrap_or_else(|| panic!("ConfigMap {cm} has no {key}"));
    (effective(file, &overrides), env)
}

#[test]
fn k8s_ports_env_and_paths_match_what_the_gateway_serves() {
    let k = base();
    let (doc, env) = k8s_settings(&k);
    let settings = &doc.server;
    let deploy = find(&k.docs, "Deployment", "switchyard");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(deploy, "switchyard");

    // The command is one the CLI accepts.
    let args = strings(&c["args"]);
    assert!(matches!(
        parse_cli("k8s args", &args).command,
        Command::Run { .. }
    ));

    // Listeners: on every interface, on the named container ports.
    let listen = addr("server.listen", &settings.listen);
    let admin = addr("server.admin_listen", &settings.admin_listen);
    let tls = settings
        .tls
        .as_ref()
        .expect("[server.tls] in the bootstrap");
    let tls = addr("server.tls.listen", &tls.listen);
    for (name, a) in [("http", listen), ("admin", admin), ("https", tls)] {
        assert!(
            a.ip().is_unspecified(),
            "{name} listens on {a}: not reachable from outside the pod"
        );
        assert_eq!(
            container_port(c, &Yaml::String(name.into())),
            i64::from(a.port()),
            "containerPort {name}"
        );
    }
    assert_eq!(list(&c["ports"]).len(), 3, "only the three listeners");

    // Probes: on the admin port, paths the admin listener answers.
    let probe = |p: &str| &c[p]["httpGet"];
    assert_eq!(s(&probe("livenessProbe")["path"]), "/health/live");
    assert_eq!(s(&probe("readinessProbe")["path"]), "/health/ready");
    assert_eq!(s(&probe("startupProbe")["path"]), "/health/live");
    for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(
            container_port(c, &probe(p)["port"]),
            i64::from(admin.port()),
            "{p} port"
        );
    }
    let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        s(&annotations["prometheus.io/port"]),
        admin.port().to_string()
    );
    assert_eq!(s(&annotations["prometheus.io/path"]), "/metrics");

    // Termination: preStop sleep + draining fit in the grace period.
    let sleep = int(&c["lifecycle"]["preStop"]["sleep"]["seconds"]);
    let grace = int(&pod["terminationGracePeriodSeconds"]);
    let drain_ms = i64::try_from(settings.grace_period_ms).expect("ms");
    assert!(
        grace * 1000 >= sleep * 1000 + drain_ms + 1000,
        "terminationGracePeriodSeconds {grace} must cover preStop {sleep}s + grace_period_ms {drain_ms} + 1s"
    );

    // Non-root, read-only root filesystem, the image's user.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(
        int(&pod["securityContext"]["runAsUser"]).to_string(),
        dockerfile().user
    );

    // TLS files live in the mounted Secret.
    let tls_mount = list(&c["volumeMounts"])
        .iter()
        .find(|m| m["name"].as_str() == Some("tls"))
        .expect("tls mount");
    let dir = format!("{}/", s(&tls_mount["mountPath"]));
    for cert in &settings.tls.as_ref().expect("tls").certificates {
        assert!(
            cert.cert.starts_with(&dir) && cert.key.starts_with(&dir),
            "{cert:?} outside {dir}"
        );
    }

    // Redis: the gateway's redis_url is the Redis Service; the operator
    // CLI's env agrees with it.
    let url = settings.redis_url.as_deref().expect("redis_url");
    assert_eq!(
        env.get("SWITCHYARD_REDIS_URL").map(String::as_str),
        Some(url)
    );
    assert_eq!(
        env.get("SWITCHYARD_REDIS_PREFIX").map(String::as_str),
        Some(settings.redis_prefix.as_str())
    );
    let (host, port) = redis_host_port(url);
    let svc = find(&k.docs, "Service", &host);
    assert!(
        list(&svc["spec"]["ports"])
            .iter()
            .any(|p| int(&p["port"]) == i64::from(port))
    );
    let sts = find(&k.docs, "StatefulSet", &host);
    assert_eq!(
        svc["spec"]["selector"],
        sts["spec"]["selector"]["matchLabels"]
    );

    // Services target named container ports; only the admin Service
    // reaches the admin port.
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    for (name, wants_admin) in [("switchyard", false), ("switchyard-admin", true)] {
        let svc = find(&k.docs, "Service", name);
        assert_eq!(
            &svc["spec"]["selector"], selector,
            "{name} selects the gateways"
        );
        let targets: Vec<i64> = list(&svc["spec"]["ports"])
            .iter()
            .map(|p| container_port(c, &p["targetPort"]))
            .collect();
        assert_eq!(
            targets.contains(&i64::from(admin.port())),
            wants_admin,
            "{name}: {targets:?}"
        );
    }
    assert_eq!(
        s(&find(&k.docs, "Service", "switchyard-admin")["spec"]["type"]),
        "ClusterIP"
    );

    // NetworkPolicy: the admin port only in rules that name who may come.
    let np = find(&k.docs, "NetworkPolicy", "switchyard-gateway");
    assert_eq!(&np["spec"]["podSelector"]["matchLabels"], selector);
    let mut admin_rules = 0;
    for rule in list(&np["spec"]["ingress"]) {
        let ports: Vec<i64> = list(&rule["ports"])
            .iter()
            .map(|p| container_port(c, &p["port"]))
            .collect();
        if ports.contains(&i64::from(admin.port())) {
            admin_rules += 1;
            assert!(
                rule["from"].as_vec().is_some_and(|f| !f.is_empty()),
                "admin port open to all: {rule:?}"
            );
            assert_eq!(ports.len(), 1, "admin shares a rule: {ports:?}");
        }
    }
    assert_eq!(admin_rules, 1);

    // Scale: 12 replicas, the HPA's floor equal to them.
    assert_eq!(int(&deploy["spec"]["replicas"]), 12);
    let hpa = find(&k.docs, "HorizontalPodAutoscaler", "switchyard");
    assert_eq!(int(&hpa["spec"]["minReplicas"]), 12);
    assert_eq!(s(&hpa["spec"]["scaleTargetRef"]["name"]), "switchyard");
    let metrics: Vec<&str> = list(&hpa["spec"]["metrics"])
        .iter()
        .map(|m| s(&m["type"]))
        .collect();
    assert_eq!(metrics, ["Resource", "Pods"]);
    let pdb = find(&k.docs, "PodDisruptionBudget", "switchyard");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
}

/// The wedding-season overlay patches resources that exist in the base,
/// keeps the HPA floor equal to the replicas, lets it reach 50, and only
/// raises resources.
#[test]
fn wedding_season_overlay_patches_the_base() {
    let k = base();
    let dir = "k8s/overlays/wedding-season";
    let kust = &yaml(&format!("{dir}/kustomization.yaml"))[0];
    assert_eq!(strings(&kust["resources"]), ["../../base"]);
    let mut patched = BTreeMap::new();
    for p in list(&kust["patches"]) {
        for doc in yaml(&format!("{dir}/{}", s(&p["path"]))) {
            let (kind, name) = (
                s(&doc["kind"]).to_string(),
                s(&doc["metadata"]["name"]).to_string(),
            );
            let original = find(&k.docs, &kind, &name);
            assert_eq!(doc["apiVersion"], original["apiVersion"], "{kind}/{name}");
            patched.insert(kind, doc);
        }
    }
    let deploy = &patched["Deployment"];
    let hpa = &patched["HorizontalPodAutoscaler"];
    assert_eq!(
        int(&hpa["spec"]["minReplicas"]),
        int(&deploy["spec"]["replicas"])
    );
    assert!(int(&hpa["spec"]["minReplicas"]) > 12);
    assert_eq!(int(&hpa["spec"]["maxReplicas"]), 50);

    let cpu = |c: &Yaml, what: &str| {
        let v = s(&c["resources"][what]["cpu"]);
        v.strip_suffix('m').map_or_else(
            || v.parse::<f64>().expect("cpu") * 1000.0,
            |m| m.parse().expect("cpu"),
        )
    };
    let (before, after) = (
        container(find(&k.docs, "Deployment", "switchyard"), "switchyard"),
        container(deploy, "switchyard"),
    );
    for what in ["requests", "limits"] {
        assert!(
            cpu(after, what) > cpu(before, what),
            "{what}.cpu not raised"
        );
    }
}

/// The probes, the scrape path and the source series of the HPA's
/// request-rate metric, asked of a gateway serving the bootstrap table (TLS
/// and Redis left out: no certificate or Redis here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_probe_paths_and_the_hpa_series_are_served_by_the_gateway() {
    let k = base();
    let (mut doc, _) = k8s_settings(&k);
    doc.server.tls = None;
    doc.server.redis_url = None;
    let deploy = find(&k.docs, "Deployment", "switchyard");
    let c = container(deploy, "switchyard");
    let gw = TestGateway::start(doc).await;
    let mut paths = vec![
        s(&deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]).to_string(),
    ];
    for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
        paths.push(s(&c[p]["httpGet"]["path"]).to_string());
    }
    for path in paths {
        let resp = gw.admin_get(&path).send().await;
        assert_eq!(resp.status(), 200, "{path}");
    }

    // The HPA's request-rate metric comes from a counter the gateway
    // exports (prometheus-adapter's seriesQuery in hpa.yaml).
    let hpa = read("k8s/base/hpa.yaml");
    let series = hpa
        .split("seriesQuery: '")
        .nth(1)
        .and_then(|q| q.split('{').next())
        .expect("seriesQuery in hpa.yaml");
    let resp = gw
        .get("/api/orders")
        .header("x-api-version", "v9")
        .send()
        .await;
    assert_eq!(resp.status(), 400, "an unknown version is still counted");
    let exported = gw.metrics().await.names();
    assert!(
        exported.contains(series),
        "{series} is not exported: {exported:?}"
    );
}

// ---------------------------------------------------------------------------
// Docker

struct Dockerfile {
    expose: BTreeSet<u16>,
    env: BTreeMap<String, String>,
    user: String,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
}

/// The runtime stage of docker/Dockerfile (continuation lines joined).
fn dockerfile() -> Dockerfile {
    let text = read("docker/Dockerfile").replace("\\\n", " ");
    let runtime = text.rsplit("\nFROM ").next().expect("a FROM");
    let mut d = Dockerfile {
        expose: BTreeSet::new(),
        env: BTreeMap::new(),
        user: String::new(),
        healthcheck: Vec::new(),
        entrypoint: Vec::new(),
    };
    let json = |v: &str| -> Vec<String> { serde_json::from_str(v.trim()).expect("JSON exec form") };
    for line in runtime.lines().map(str::trim) {
        let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
        match op {
            "EXPOSE" => d.expose.extend(
                rest.split_whitespace()
                    .map(|p| p.parse::<u16>().expect("port")),
            ),
            "ENV" => {
                for kv in rest.split_whitespace() {
                    let (k, v) = kv.split_once('=').expect("ENV k=v");
                    d.env.insert(k.into(), v.into());
                }
            }
            "USER" => d.user = rest.split(':').next().expect("uid").trim().into(),
            "HEALTHCHECK" => d.healthcheck = json(rest.split_once(" CMD ").expect("CMD").1),
            "ENTRYPOINT" => d.entrypoint = json(rest),
            _ => {}
        }
    }
    d
}

#[test]
fn dockerfile_ports_env_and_healthcheck_match_the_binary() {
    let d = dockerfile();
    check_env_names("Dockerfile ENV", d.env.keys().map(String::as_str));
    let (_, overrides) = run_with_env("Dockerfile ENV", &d.env);
    let listen = overrides.listen.expect("SWITCHYARD_LISTEN");
    let admin = overrides.admin_listen.expect("SWITCHYARD_ADMIN_LISTEN");
    assert!(listen.ip().is_unspecified() && admin.ip().is_unspecified());
    // 8443: [server.tls] listen as the k8s bootstrap table sets it.
    let (k8s, _) = k8s_settings(&base());
    let tls = addr("tls", &k8s.server.tls.expect("tls").listen).port();
    assert_eq!(d.expose, BTreeSet::from([listen.port(), tls, admin.port()]));
    assert_eq!(
        d.user.parse::<u32>().ok(),
        Some(65532),
        "numeric non-root user"
    );

    assert_eq!(d.entrypoint, ["/usr/local/bin/switchyard"]);
    assert_eq!(d.healthcheck[0], d.entrypoint[0]);
    match parse_cli("HEALTHCHECK", &d.healthcheck[1..]).command {
        Command::Healthcheck { url, .. } => {
            assert_eq!(
                url,
                format!("http://127.0.0.1:{}/health/ready", admin.port())
            );
        }
        other => panic!("HEALTHCHECK runs {other:?}"),
    }
}

#[test]
fn compose_ports_env_and_endpoints_match_the_binary_and_the_table() {
    let compose = &yaml("docker/compose.yaml")[0];
    let services = compose["services"].as_hash().expect("services");
    let service = |name: &str| &compose["services"][name];
    let command = |svc: &Yaml| strings(&svc["command"]);
    let is_switchyard = |svc: &Yaml| svc["image"].as_str() == Some("switchyard:dev");

    // Every switchyard command (services and health checks) parses.
    for (name, svc) in services {
        if !is_switchyard(svc) {
            continue;
        }
        let name = s(name);
        parse_cli(name, &command(svc));
        if !svc["healthcheck"].is_badvalue() {
            let test = strings(&svc["healthcheck"]["test"]);
            assert_eq!(test[..2], ["CMD", "/usr/local/bin/switchyard"], "{name}");
            parse_cli(name, &test[2..]);
        }
    }

    // Upstreams: service name -> (port, version), from their real flags.
    let mut upstreams = BTreeMap::new();
    for (name, svc) in services {
        if !is_switchyard(svc) {
            continue;
        }
        if let Command::DemoUpstream {
            listen, version, ..
        } = parse_cli("", &command(svc)).command
        {
            assert!(listen.ip().is_unspecified(), "{name:?} listens on {listen}");
            upstreams.insert(s(name).to_string(), (listen.port(), version));
        }
    }
    assert_eq!(upstreams.len(), 3);

    // The table's pools are those upstreams, each serving the pool's version.
    let table = config::load(
        &read("docker/table.toml"),
        Origin::File("docker/table.toml".into()),
    )
    .unwrap_or_else(|e| panic!("docker/table.toml:\n{e}"));
    let mut served = BTreeSet::new();
    for pool in &table.pools {
        for endpoint in &pool.endpoints {
            let (host, port) = endpoint.rsplit_once(':').expect("host:port");
            let (up_port, version) = upstreams
                .get(host)
                .unwrap_or_else(|| panic!("pool {}: {host} is not a compose upstream", pool.name));
            assert_eq!(port, up_port.to_string(), "{endpoint}");
            assert_eq!(version, &pool.version, "{endpoint}");
            served.insert(host.to_string());
        }
    }
    assert_eq!(served.len(), upstreams.len(), "an upstream no pool uses");

    // Gateways: two replicas on one Redis, listening where compose publishes.
    let mut gateways = 0;
    for (name, svc) in services {
        let name = s(name);
        if !is_switchyard(svc)
            || !matches!(parse_cli(name, &command(svc)).command, Command::Run { .. })
        {
            continue;
        }
        gateways += 1;
        let env: BTreeMap<String, String> = svc["environment"]
            .as_hash()
            .expect("environment map")
            .iter()
            .map(|(k, v)| (s(k).to_string(), s(v).to_string()))
            .collect();
        check_env_names(name, env.keys().map(String::as_str));
        let (config_path, overrides) = run_with_env(name, &env);
        let volume = strings(&svc["volumes"])
            .into_iter()
            .find(|v| v.split(':').nth(1) == config_path.to_str())
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {}", config_path.display()));
        let file = volume
            .split(':')
            .next()
            .expect("source")
            .trim_start_matches("./");
        let doc = effective(&format!("docker/{file}"), &overrides);
        let published: Vec<(String, u16)> = strings(&svc["ports"])
            .iter()
            .map(|p| {
                let (host, container) = p.rsplit_once(':').expect("host:container");
                (host.to_string(), container.parse().expect("port"))
            })
            .collect();
        let port_of = |a: &str| addr(name, a).port();
        for (what, port) in [
            ("listen", port_of(&doc.server.listen)),
            ("admin", port_of(&doc.server.admin_listen)),
        ] {
            let p = published
                .iter()
                .find(|(_, c)| *c == port)
                .unwrap_or_else(|| {
                    panic!("{name}: {what} port {port} not published: {published:?}")
                });
            if what == "admin" {
                assert!(
                    p.0.starts_with("127.0.0.1:"),
                    "{name}: admin published beyond loopback"
                );
            }
        }
        let url = doc.server.redis_url.as_deref().expect("redis_url");
        assert_eq!(
            env.get("SWITCHYARD_REDIS_URL").map(String::as_str),
            Some(url)
        );
        let (host, port) = redis_host_port(url);
        assert!(
            s(&service(&host)["image"]).starts_with("redis:"),
            "{host} is Redis"
        );
        assert_eq!(port, 6379);
    }
    assert_eq!(gateways, 2);
}
