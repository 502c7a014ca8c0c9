//! What operators deploy with: the Helm chart (deploy/helm/edge) and the
//! kustomize manifests. Helm is not packaged in Debian, so the chart is
//! rendered by scripts/helm-render (Go's text/template, the engine Helm
//! uses, with the Sprig functions the chart calls); every manifest is
//! validated against the Kubernetes schema by kubernetes-validate (PyPI,
//! strict: unknown fields are errors); the config the chart mounts passes
//! `edge check`; the pods are hardened as the issue asks.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_edge");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python virtualenv `scripts/deps.sh test` fills (`<target>/pyenv`).
fn pyenv(tool: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../pyenv/bin")
        .join(tool);
    assert!(
        p.exists(),
        "{} is missing: run scripts/deps.sh test (make test does)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// YAML (one or more documents) as JSON values, by PyYAML.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = run(Command::new(pyenv("python")).args([
        "-c",
        "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        path.to_str().unwrap(),
    ]));
    serde_json::from_str(&text).unwrap()
}

fn validate(files: &[PathBuf]) {
    let mut cmd = Command::new(pyenv("kubernetes-validate"));
    cmd.args(["--strict", "--quiet"]).args(files);
    run(&mut cmd);
}

struct Chart {
    dir: tempfile::TempDir,
    renderer: PathBuf,
}

impl Chart {
    /// Builds the renderer (Debian's golang-go; `scripts/deps.sh test`
    /// installs it) and turns Chart.yaml and values.yaml into JSON.
    fn new() -> Chart {
        let dir = tempfile::tempdir().unwrap();
        let renderer = dir.path().join("helm-render");
        let go_cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
        run(Command::new("go")
            .args(["build", "-o"])
            .arg(&renderer)
            .arg(repo().join("scripts/helm-render/main.go"))
            .env("GOCACHE", &go_cache)
            .env("GOPATH", dir.path().join("gopath"))
            .env("GO111MODULE", "off"));
        let chart = repo().join("deploy/helm/edge");
        for (yaml, json) in [("Chart.yaml", "chart.json"), ("values.yaml", "values.json")] {
            let docs = yaml_docs(&chart.join(yaml));
            std::fs::write(dir.path().join(json), docs[0].to_string()).unwrap();
        }
        Chart { dir, renderer }
    }

    /// `helm template RELEASE deploy/helm/edge -n NAMESPACE -f <values>`:
    /// the manifests' file, or the renderer's error.
    fn render(&self, values: &Value, release: &str, namespace: &str) -> Result<PathBuf, String> {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let extra = self.dir.path().join(format!("values-{n}.json"));
        std::fs::write(&extra, values.to_string()).unwrap();
        let out = Command::new(&self.renderer)
            .arg("-chart")
            .arg(repo().join("deploy/helm/edge"))
            .arg("-meta")
            .arg(self.dir.path().join("chart.json"))
            .arg("-values")
            .arg(self.dir.path().join("values.json"))
            .arg("-values")
            .arg(&extra)
            .args(["-release", release, "-namespace", namespace])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let file = self.dir.path().join(format!("manifests-{n}.yaml"));
        std::fs::write(&file, &out.stdout).unwrap();
        Ok(file)
    }
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

/// `edge check` on the config a ConfigMap carries.
fn check_config(docs: &[Value]) -> String {
    let text = find(docs, "ConfigMap")["data"]["edge.toml"]
        .as_str()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, text).unwrap();
    run(Command::new(BIN).arg("check").arg(&file));
    text.to_string()
}

/// What every edge pod must be: non-root, seccomp RuntimeDefault, no
/// privilege escalation, read-only root, probes on /live and /ready,
/// resources set, the admin token from a Secret.
fn assert_hardened(pod: &Value) {
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{pod}");
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{pod}"
    );
    let c = &spec["containers"][0];
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"], false,
        "{c}"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{c}");
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        json!(["ALL"]),
        "{c}"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live", "{c}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{c}");
    assert!(c["resources"]["requests"]["memory"].is_string(), "{c}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{c}");
    assert_eq!(c["env"][0]["name"], "EDGE_ADMIN_TOKEN", "{c}");
    assert!(
        c["env"][0]["valueFrom"]["secretKeyRef"]["name"].is_string(),
        "{c}"
    );
}

#[test]
fn the_helm_chart_renders_valid_hardened_manifests_in_both_modes() {
    let chart = Chart::new();

    // Defaults: a Deployment of interchangeable nodes.
    let file = chart.render(&json!({}), "edge", "edge").unwrap();
    validate(std::slice::from_ref(&file));
    let docs = yaml_docs(&file);
    assert_eq!(
        kinds(&docs),
        [
            "ConfigMap/edge",
            "Deployment/edge",
            "PodDisruptionBudget/edge",
            "Service/edge",
            "Service/edge-admin"
        ]
    );
    let deployment = find(&docs, "Deployment");
    assert_hardened(&deployment["spec"]["template"]);
    let config = check_config(&docs);
    assert!(
        config.contains("[route.cache]") && config.contains("[cache.video]"),
        "it caches video"
    );
    assert!(!config.contains("[site]"));
    let checksum = |docs: &[Value], kind: &str| {
        find(docs, kind)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = checksum(&docs, "Deployment");
    assert_eq!(before.len(), 64);
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // A changed config changes the checksum annotation: the pods roll.
    let own = std::fs::read_to_string(repo().join("deploy/docker/edge.toml")).unwrap();
    let file = chart
        .render(
            &json!({ "config": own, "podDisruptionBudget": { "enabled": false } }),
            "edge",
            "edge",
        )
        .unwrap();
    let docs = yaml_docs(&file);
    assert_ne!(checksum(&docs, "Deployment"), before);
    assert!(docs.iter().all(|d| d["kind"] != "PodDisruptionBudget"));
    assert_eq!(check_config(&docs), own);
    let again = chart.render(&json!({}), "edge", "edge").unwrap();
    assert_eq!(
        checksum(&yaml_docs(&again), "Deployment"),
        before,
        "the same config, the same checksum"
    );

    // A site: a StatefulSet whose pods are each other's peers, each with
    // its own volume, under a headless Service; a ServiceMonitor.
    let values = json!({
        "mode": "statefulset",
        "replicaCount": 4,
        "serviceMonitor": { "enabled": true, "labels": { "release": "prometheus" } },
        "cache": { "storageClassName": "fast-ssd" },
    });
    let file = chart.render(&values, "cdn", "video").unwrap();
    validate(std::slice::from_ref(&file));
    let docs = yaml_docs(&file);
    assert_eq!(
        kinds(&docs),
        [
            "ConfigMap/cdn",
            "PodDisruptionBudget/cdn",
            "Service/cdn",
            "Service/cdn-admin",
            "Service/cdn-peers",
            "ServiceMonitor/cdn",
            "StatefulSet/cdn"
        ]
    );
    let sts = find(&docs, "StatefulSet");
    assert_hardened(&sts["spec"]["template"]);
    assert_eq!(sts["spec"]["serviceName"], "cdn-peers");
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "cache");
    assert_eq!(claim["spec"]["storageClassName"], "fast-ssd");
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes.iter().all(|v| v["name"] != "cache"),
        "the claim, not an emptyDir"
    );
    let peers = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "cdn-peers")
        .unwrap();
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    let config = check_config(&docs);
    for i in 0..4 {
        let name = format!("cdn-{i}.cdn-peers.video.svc.cluster.local:8080");
        assert!(config.contains(&name), "peer {i} missing from:\n{config}");
    }
    assert!(!config.contains("cdn-4."), "{config}");
    let monitor = find(&docs, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // A wrong mode is an error, not a half-rendered chart.
    let err = chart
        .render(&json!({ "mode": "daemonset" }), "edge", "edge")
        .unwrap_err();
    assert!(
        err.contains("mode must be deployment or statefulset"),
        "{err}"
    );
}

#[test]
fn the_kustomize_manifests_are_valid_and_hardened() {
    for dir in ["deploy/kubernetes", "deploy/kubernetes-site"] {
        let files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "yaml")
                    && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            })
            .collect();
        validate(&files);
        let docs: Vec<Value> = files.iter().flat_map(|f| yaml_docs(f)).collect();
        let workload = docs
            .iter()
            .find(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
            .unwrap();
        assert_hardened(&workload["spec"]["template"]);
        assert!(
            docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
            "{dir}: no disruption budget"
        );
    }
}
