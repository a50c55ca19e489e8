//! The fake API server is as strict as a real one: tests that pass against it would not be fooled by
//! a lenient fake (bad names and labels, missing fields, stale resourceVersions, Status errors).

use platform_tests::fake_k8s::FakeK8s;
use serde_json::{json, Value};

async fn send(method: reqwest::Method, url: String, body: Option<(&str, Value)>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "agent", "image": "zeroclaw:latest"}]}})
}

#[tokio::test]
async fn errors_are_status_objects_like_the_api_servers() {
    let fake = FakeK8s::start().await;
    let pods = format!("{}/api/v1/namespaces/tenants/pods", fake.url());
    let (code, body) = send(reqwest::Method::GET, format!("{pods}/nope"), None).await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["code"], 404);
    assert_eq!(body["message"], "pods \"nope\" not found");

    let json = "application/json";
    assert_eq!(
        send(
            reqwest::Method::POST,
            pods.clone(),
            Some((json, pod("p1", json!({}))))
        )
        .await
        .0,
        201
    );
    let (code, body) = send(
        reqwest::Method::POST,
        pods.clone(),
        Some((json, pod("p1", json!({})))),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_422() {
    let fake = FakeK8s::start().await;
    let pods = format!("{}/api/v1/namespaces/tenants/pods", fake.url());
    let json = "application/json";
    let long = "a".repeat(64);
    let cases = [
        pod(&long, json!({})),
        pod("Upper", json!({})),
        pod("p", json!({"tenant": "not a valid value"})),
        pod("p", json!({"app": "x".repeat(64)})),
        json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "agent"}]}}),
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "agent", "image": "i",
               "volumeMounts": [{"name": "missing", "mountPath": "/x"}]}]}}),
    ];
    for c in cases {
        let (code, body) = send(reqwest::Method::POST, pods.clone(), Some((json, c.clone()))).await;
        assert_eq!(code, 422, "{c} → {body}");
        assert_eq!(body["reason"], "Invalid");
    }
    let pvcs = format!(
        "{}/api/v1/namespaces/tenants/persistentvolumeclaims",
        fake.url()
    );
    let (code, _) = send(
        reqwest::Method::POST,
        pvcs,
        Some((json, json!({"metadata": {"name": "c"}, "spec": {}}))),
    )
    .await;
    assert_eq!(code, 422);
    assert!(fake.list("pods").is_empty(), "nothing half-written");
}

#[tokio::test]
async fn stale_resource_versions_conflict_and_selectors_filter() {
    let fake = FakeK8s::start().await;
    let pods = format!("{}/api/v1/namespaces/tenants/pods", fake.url());
    let json = "application/json";
    let (_, created) = send(
        reqwest::Method::POST,
        pods.clone(),
        Some((json, pod("a", json!({"app": "warm-pool", "warm": "true"})))),
    )
    .await;
    send(
        reqwest::Method::POST,
        pods.clone(),
        Some((json, pod("b", json!({"app": "zeroclaw", "tenant": "b"})))),
    )
    .await;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    let merge = "application/merge-patch+json";
    let claim = json!({"metadata": {"resourceVersion": rv, "labels": {"warm": "consuming"}}});
    let (first, _) = send(
        reqwest::Method::PATCH,
        format!("{pods}/a"),
        Some((merge, claim.clone())),
    )
    .await;
    let (second, body) = send(
        reqwest::Method::PATCH,
        format!("{pods}/a"),
        Some((merge, claim)),
    )
    .await;
    assert_eq!((first, second), (200, 409));
    assert_eq!(body["reason"], "Conflict");

    let list = |sel: &'static str| {
        let url = format!("{pods}?labelSelector={}", urlencode(sel));
        async move {
            let (_, body) = send(reqwest::Method::GET, url, None).await;
            assert_eq!(body["kind"], "PodList");
            assert!(body["metadata"]["resourceVersion"].is_string());
            let mut names: Vec<String> = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(list("app=warm-pool,warm=true").await, Vec::<String>::new());
    assert_eq!(list("app in (warm-pool, zeroclaw)").await, vec!["a", "b"]);
    assert_eq!(list("app!=zeroclaw").await, vec!["a"]);
    assert_eq!(list("tenant").await, vec!["b"]);
    assert_eq!(list("!tenant").await, vec!["a"]);
    assert_eq!(fake.count("list", "pods"), 5);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Server-side apply

const APPLY: &str = "application/apply-patch+yaml";

/// `PATCH` as server-side apply, as `manager` (none: no `fieldManager`), forced or not.
async fn apply(
    fake: &FakeK8s,
    path: &str,
    manager: Option<&str>,
    force: bool,
    body: Value,
) -> (u16, Value) {
    let mut q = Vec::new();
    if let Some(m) = manager {
        q.push(format!("fieldManager={m}"));
    }
    if force {
        q.push("force=true".to_owned());
    }
    let url = format!("{}{path}?{}", fake.url(), q.join("&"));
    send(reqwest::Method::PATCH, url, Some((APPLY, body))).await
}

const CM: &str = "/api/v1/namespaces/tenants/configmaps/c";

fn config_map(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "c", "labels": {"app": "x"}}, "data": data})
}

/// The `fieldsV1` of `manager`'s entry with `operation`, or null.
fn owned(obj: &Value, manager: &str, operation: &str) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn apply_creates_the_object_records_its_fields_and_a_reapply_writes_nothing() {
    let fake = FakeK8s::start().await;
    let (code, body) = apply(&fake, CM, None, false, config_map(json!({"a": "1"}))).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    assert!(body["message"].as_str().unwrap().contains("fieldManager"));
    assert!(fake.get("configmaps", "tenants", "c").is_none());

    let (code, created) = apply(&fake, CM, Some("m1"), false, config_map(json!({"a": "1"}))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"]["a"], "1");
    assert!(created["metadata"]["uid"].is_string());
    assert_eq!(
        owned(&created, "m1", "Apply"),
        json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
    let (code, again) = apply(&fake, CM, Some("m1"), false, config_map(json!({"a": "1"}))).await;
    assert_eq!(code, 200);
    assert_eq!(rv(&again), rv(&created), "a no-op apply is no write");
    assert_eq!(fake.get("configmaps", "tenants", "c").unwrap(), created);
    assert_eq!(
        (
            fake.count("patch", "configmaps"),
            fake.count("create", "configmaps")
        ),
        (3, 0)
    );

    // The body is YAML (kube-rs sends JSON, which is YAML too).
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v # comment\n";
    let r = reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/namespaces/tenants/configmaps/y?fieldManager=m1",
            fake.url()
        ))
        .header("content-type", APPLY)
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        fake.get("configmaps", "tenants", "y").unwrap()["data"]["k"],
        "v"
    );
}

#[tokio::test]
async fn a_conflicting_apply_is_refused_with_the_fields_until_forced() {
    let fake = FakeK8s::start().await;
    let all = json!({"a": "1", "b": "1", "c": "1"});
    assert_eq!(
        apply(&fake, CM, Some("m1"), false, config_map(all)).await.0,
        201
    );

    let (code, body) = apply(&fake, CM, Some("m2"), false, config_map(json!({"a": "2"}))).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );
    let causes = body["details"]["causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{body}");
    assert_eq!(causes[0]["reason"], "FieldManagerConflict");
    assert_eq!(causes[0]["field"], ".data.a");
    assert!(causes[0]["message"].as_str().unwrap().contains("\"m1\""));
    assert_eq!(
        fake.get("configmaps", "tenants", "c").unwrap()["data"]["a"],
        "1"
    );

    // The same value is no conflict: both own it.
    let (code, shared) = apply(&fake, CM, Some("m2"), false, config_map(json!({"b": "1"}))).await;
    assert_eq!(code, 200, "{shared}");
    assert_eq!(owned(&shared, "m2", "Apply")["f:data"], json!({"f:b": {}}));
    assert!(owned(&shared, "m1", "Apply")["f:data"]["f:b"].is_object());

    // Forced, m2 takes `a` from m1.
    let both = config_map(json!({"a": "2", "b": "1"}));
    let (code, forced) = apply(&fake, CM, Some("m2"), true, both).await;
    assert_eq!(code, 200, "{forced}");
    assert_eq!(forced["data"]["a"], "2");
    assert!(owned(&forced, "m1", "Apply")["f:data"]["f:a"].is_null());
    assert!(owned(&forced, "m2", "Apply")["f:data"]["f:a"].is_object());

    // m1 stops applying its data: what only it owned goes, what m2 owns stays.
    let (code, after) = apply(&fake, CM, Some("m1"), false, config_map(json!({}))).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["data"], json!({"a": "2", "b": "1"}));
}

#[tokio::test]
async fn a_hand_edit_owns_the_field_so_only_a_forced_apply_resets_it() {
    let fake = FakeK8s::start().await;
    assert_eq!(
        apply(&fake, CM, Some("m1"), false, config_map(json!({"a": "1"})))
            .await
            .0,
        201
    );
    let (code, edited) = send(
        reqwest::Method::PATCH,
        format!("{}{CM}?fieldManager=kubectl-edit", fake.url()),
        Some((
            "application/merge-patch+json",
            json!({"data": {"a": "hand"}}),
        )),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        owned(&edited, "kubectl-edit", "Update"),
        json!({"f:data": {"f:a": {}}})
    );
    assert!(owned(&edited, "m1", "Apply")["f:data"]["f:a"].is_null());

    let (code, body) = apply(&fake, CM, Some("m1"), false, config_map(json!({"a": "1"}))).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("kubectl-edit"));
    let (code, reset) = apply(&fake, CM, Some("m1"), true, config_map(json!({"a": "1"}))).await;
    assert_eq!(code, 200);
    assert_eq!(reset["data"]["a"], "1");
    assert!(
        owned(&reset, "kubectl-edit", "Update").is_null(),
        "the editor owns nothing any more: {reset}"
    );
}

#[tokio::test]
async fn managers_own_list_items_by_key() {
    let fake = FakeK8s::start().await;
    let path = "/apis/apps/v1/namespaces/tenants/deployments/d";
    let labels = json!({"app": "d"});
    let full = |env: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                            {"name": "agent", "image": "a", "env": [{"name": "E", "value": env}]}]}}}})
    };
    let sidecar = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    };
    assert_eq!(
        apply(&fake, path, Some("m1"), false, full("1")).await.0,
        201
    );
    let (code, d) = apply(
        &fake,
        path,
        Some("m2"),
        false,
        sidecar(json!([{"name": "sidecar", "image": "s"}])),
    )
    .await;
    assert_eq!(code, 200, "{d}");
    let names = |d: &Value| -> Vec<String> {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&d), ["agent", "sidecar"]);
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(
        owned(&d, "m2", "Apply")["f:spec"]["f:template"]["f:spec"]["f:containers"]
            ["k:{\"name\":\"sidecar\"}"]["f:image"]
            .is_object(),
        "{d}"
    );

    let (code, d) = apply(&fake, path, Some("m1"), false, full("2")).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(names(&d), ["agent", "sidecar"], "m1 changes its item only");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "E", "value": "2"}])
    );
    let (code, d) = apply(&fake, path, Some("m2"), false, sidecar(json!([]))).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(
        names(&d),
        ["agent"],
        "m2's item goes when m2 stops applying it"
    );
}

#[tokio::test]
async fn apply_validates_like_create_and_keeps_immutable_fields() {
    let fake = FakeK8s::start().await;
    let pod_path = "/api/v1/namespaces/tenants/pods/p";
    let bad_label = pod("p", json!({"tenant": "not a valid value"}));
    let (code, body) = apply(&fake, pod_path, Some("m"), false, bad_label).await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    let no_image = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                          "spec": {"containers": [{"name": "agent"}]}});
    assert_eq!(
        apply(&fake, pod_path, Some("m"), false, no_image).await.0,
        422
    );
    assert!(fake.list("pods").is_empty(), "nothing half-written");

    // The request must name the object it patches, by type and name, and own no managedFields.
    let mut wrong_name = pod("q", json!({}));
    assert_eq!(
        apply(&fake, pod_path, Some("m"), false, wrong_name.clone())
            .await
            .0,
        400
    );
    wrong_name["metadata"]["name"] = json!("p");
    wrong_name.as_object_mut().unwrap().remove("kind");
    assert_eq!(
        apply(&fake, pod_path, Some("m"), false, wrong_name).await.0,
        400
    );
    let mut with_fields = pod("p", json!({}));
    with_fields["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    assert_eq!(
        apply(&fake, pod_path, Some("m"), false, with_fields)
            .await
            .0,
        400
    );

    assert_eq!(
        apply(&fake, pod_path, Some("m"), false, pod("p", json!({})))
            .await
            .0,
        201
    );
    let mut changed = pod("p", json!({}));
    changed["spec"]["containers"][0]["env"] = json!([{"name": "X", "value": "1"}]);
    let (code, body) = apply(&fake, pod_path, Some("m"), true, changed).await;
    assert_eq!(code, 422, "pod specs are immutable: {body}");

    let pv_path = "/api/v1/persistentvolumes/v";
    let pv = |handle: &str, options: Value| {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                        "mountOptions": options,
                        "csi": {"driver": "s3.csi.aws.com", "volumeHandle": handle}}})
    };
    assert_eq!(
        apply(&fake, pv_path, Some("m"), false, pv("h1", json!(["a"])))
            .await
            .0,
        201
    );
    let (code, body) = apply(&fake, pv_path, Some("m"), true, pv("h2", json!(["a"]))).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("persistentvolumesource is immutable"));
    let (code, _) = send(
        reqwest::Method::PATCH,
        format!("{}{pv_path}", fake.url()),
        Some((
            "application/merge-patch+json",
            json!({"spec": {"csi": {"volumeHandle": "h2"}}}),
        )),
    )
    .await;
    assert_eq!(code, 422, "the same rule on a merge patch");
    let (code, body) = apply(
        &fake,
        pv_path,
        Some("m"),
        false,
        pv("h1", json!(["a", "b"])),
    )
    .await;
    assert_eq!(code, 200, "mount options may change: {body}");
    let stored = fake.get("persistentvolumes", "", "v").unwrap();
    assert_eq!(stored["spec"]["csi"]["volumeHandle"], "h1");
    assert_eq!(stored["spec"]["mountOptions"], json!(["a", "b"]));

    let pvc_path = "/api/v1/namespaces/tenants/persistentvolumeclaims/c";
    let pvc = |class: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                        "resources": {"requests": {"storage": "1Gi"}}}})
    };
    assert_eq!(
        apply(&fake, pvc_path, Some("m"), false, pvc("a")).await.0,
        201
    );
    assert_eq!(
        apply(&fake, pvc_path, Some("m"), true, pvc("b")).await.0,
        422
    );
}
