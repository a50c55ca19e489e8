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
