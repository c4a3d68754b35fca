//! `kube-kms migrate` against an in-process **stand-in for kube-apiserver** (kube-apiserver
//! cannot be installed on these machines; the command is also checked against a real one).
//!
//! The stand-in speaks the parts of the Kubernetes REST API the real kube-rs client uses here:
//! discovery (`/api`, `/api/v1`, `/apis`, `/apis/{group}/{version}`), list with `limit`,
//! `continue` and `remainingItemCount` (410 Gone for an expired token), get, and update (PUT)
//! with 409 Conflict on a stale resourceVersion and 404 after a deletion, behind a bearer
//! token. It models encryption at rest by marking each object "old key" until it is written,
//! refuses to count a write that changed the object (a no-op update is the whole point), and
//! records every request, so the tests assert the real request sequence of the real binary —
//! driven through a kubeconfig — not a mock of kube-kms's own functions. Faults are scripted
//! per object: a concurrent write (409), a deletion between list and update, a 503, an
//! admission refusal (422).

mod util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use util::BIN;

const TOKEN: &str = "stand-in-token";

/// One stored object.
#[derive(Debug, Clone)]
struct Object {
    body: Value,
    resource_version: u64,
    /// Whether it is still under the old key (never written since the rotation).
    old_key: bool,
    /// Writes that migrate made.
    writes: u32,
}

/// One resource the stand-in serves.
#[derive(Debug, Clone)]
struct Resource {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// By list key (`namespace/name` or `name`): the order kube-apiserver lists in.
    objects: BTreeMap<String, Object>,
}

/// Scripted faults, by list key.
#[derive(Debug, Default)]
struct Faults {
    /// Another writer updates the object just before migrate's first PUT: 409.
    concurrent_write: HashSet<String>,
    /// Deleted right after the page holding it was listed.
    delete_after_list: HashSet<String>,
    /// 503 on the first PUT.
    unavailable_once: HashSet<String>,
    /// Refused with this status and message on every PUT.
    refuse: HashMap<String, (u16, String)>,
    /// Continue tokens issued before this are expired (410 Gone).
    expire_tokens_before: u64,
    /// An aggregated API group listed in `/apis` whose server is down: its discovery
    /// (`/apis/<group>/v1beta1`) answers 503.
    unavailable_group: Option<&'static str>,
    /// Resources (by plural) whose every list answers 500, as kube-apiserver does for a page
    /// holding an object it cannot decrypt.
    list_fails: HashSet<&'static str>,
}

#[derive(Debug, Default)]
struct State {
    resources: Vec<Resource>,
    next_rv: u64,
    /// "METHOD path?query", in order.
    requests: Vec<String>,
    faults: Faults,
    /// Writes that changed an object (must stay empty: migrate writes objects back unchanged).
    changed: Vec<String>,
    /// Continue tokens issued, by token: (issue number, resource plural).
    token_serial: u64,
}

type Shared = Arc<Mutex<State>>;

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn api_version(resource: &Resource) -> String {
    if resource.group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{}/v1", resource.group)
    }
}

fn resource_list(state: &State, group: &str) -> Value {
    let resources: Vec<Value> = state
        .resources
        .iter()
        .filter(|r| r.group == group)
        .map(|r| {
            json!({
                "name": r.plural, "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .chain(
            // A resource that cannot be listed or updated: never selected.
            (group.is_empty())
                .then(|| json!({"name": "bindings", "namespaced": true, "kind": "Binding", "verbs": ["create"]})),
        )
        .collect();
    let group_version = if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn object_json(resource: &Resource, object: &Object) -> Value {
    let mut body = object.body.clone();
    body["apiVersion"] = json!(api_version(resource));
    body["kind"] = json!(resource.kind);
    body["metadata"]["resourceVersion"] = json!(object.resource_version.to_string());
    body
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().expect("stand-in state");
    let query_text = uri
        .query()
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"));
    state.requests.push(format!(
        "{method} {}{}",
        uri.path(),
        query_text.unwrap_or_default()
    ));
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let query: HashMap<String, String> = uri.query().map(url_pairs).unwrap_or_default();
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["api"]) => axum::Json(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        )
        .into_response(),
        (Method::GET, ["api", "v1"]) => axum::Json(resource_list(&state, "")).into_response(),
        (Method::GET, ["apis"]) => {
            let groups: Vec<Value> = state
                .resources
                .iter()
                .filter(|r| !r.group.is_empty())
                .map(|r| r.group)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .chain(state.faults.unavailable_group.map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1beta1"), "version": "v1beta1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                }))
                .collect();
            axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
                .into_response()
        }
        (Method::GET, ["apis", group, "v1"]) => {
            axum::Json(resource_list(&state, group)).into_response()
        }
        (Method::GET, ["apis", group, "v1beta1"])
            if state.faults.unavailable_group == Some(*group) =>
        {
            status(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            )
        }
        (_, ["api", "v1", rest @ ..]) => {
            object_request(&mut state, "", rest, &method, &query, &body)
        }
        (_, ["apis", group, "v1", rest @ ..]) => {
            let group = (*group).to_owned();
            object_request(&mut state, &group, rest, &method, &query, &body)
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn url_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_owned(), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn object_request(
    state: &mut State,
    group: &str,
    rest: &[&str],
    method: &Method,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    // [plural] | [namespaces, ns, plural, name] | [plural, name]
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return status(404, "NotFound", "no such path"),
    };
    let Some(index) = state
        .resources
        .iter()
        .position(|r| r.group == group && r.plural == plural)
    else {
        return status(404, "NotFound", "no such resource");
    };
    match (method.clone(), name) {
        (Method::GET, None) => list(state, index, query),
        (Method::GET, Some(name)) => {
            let resource = &state.resources[index];
            let key = key_of(namespace, name);
            match resource.objects.get(&key) {
                Some(object) => axum::Json(object_json(resource, object)).into_response(),
                None => status(404, "NotFound", &format!("{plural} \"{name}\" not found")),
            }
        }
        (Method::PUT, Some(name)) => update(state, index, key_of(namespace, name), body),
        _ => status(405, "MethodNotAllowed", "not supported by the stand-in"),
    }
}

fn key_of(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

fn list(state: &mut State, index: usize, query: &HashMap<String, String>) -> Response {
    if state
        .faults
        .list_fails
        .contains(state.resources[index].plural)
    {
        return status(
            500,
            "InternalError",
            "Internal error occurred: unable to transform key",
        );
    }
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let after = match query.get("continue").filter(|t| !t.is_empty()) {
        Some(token) => {
            // token = "<serial>|<last key>"
            let Some((serial, last)) = token.split_once('|') else {
                return status(400, "BadRequest", "malformed continue token");
            };
            let serial: u64 = serial.parse().unwrap_or(0);
            if serial < state.faults.expire_tokens_before {
                return status(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                );
            }
            Some(last.to_owned())
        }
        None => None,
    };
    let resource = &state.resources[index];
    let remaining: Vec<(&String, &Object)> = resource
        .objects
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
        .collect();
    let page: Vec<(String, Value)> = remaining
        .iter()
        .take(limit)
        .map(|(key, object)| {
            let mut item = object_json(resource, object);
            // Items of a list carry no apiVersion or kind, as kube-apiserver sends them.
            if let Some(map) = item.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            ((*key).clone(), item)
        })
        .collect();
    let left = remaining.len() - page.len();
    let mut metadata = json!({"resourceVersion": state.next_rv.to_string()});
    if left > 0 {
        state.token_serial += 1;
        let last = page.last().map(|(key, _)| key.clone()).unwrap_or_default();
        metadata["continue"] = json!(format!("{}|{last}", state.token_serial));
        metadata["remainingItemCount"] = json!(left);
    }
    let kind = format!("{}List", resource.kind);
    let api_version = api_version(resource);
    let items: Vec<Value> = page.iter().map(|(_, item)| item.clone()).collect();
    // Deletions scripted to happen right after this page is listed.
    let listed: Vec<String> = page.into_iter().map(|(key, _)| key).collect();
    for key in listed {
        if state.faults.delete_after_list.remove(&key) {
            state.resources[index].objects.remove(&key);
        }
    }
    axum::Json(
        json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items}),
    )
    .into_response()
}

fn update(state: &mut State, index: usize, key: String, body: &Bytes) -> Response {
    let Ok(sent) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "not JSON");
    };
    if let Some((code, message)) = state.faults.refuse.get(&key).cloned() {
        return status(code, "Invalid", &message);
    }
    if state.faults.unavailable_once.remove(&key) {
        return status(503, "ServiceUnavailable", "etcdserver: leader changed");
    }
    if state.faults.concurrent_write.remove(&key) {
        state.next_rv += 1;
        let rv = state.next_rv;
        if let Some(object) = state.resources[index].objects.get_mut(&key) {
            object.resource_version = rv;
        }
    }
    state.next_rv += 1;
    let rv = state.next_rv;
    let resource = &mut state.resources[index];
    let plural = resource.plural;
    let Some(object) = resource.objects.get_mut(&key) else {
        return status(404, "NotFound", &format!("{plural} \"{key}\" not found"));
    };
    let sent_rv = sent["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if sent_rv != object.resource_version.to_string() {
        return status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {plural} \"{key}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    let unchanged = sent["data"] == object.body["data"]
        && sent["metadata"]["name"] == object.body["metadata"]["name"]
        && sent["kind"] == json!(resource.kind);
    if !unchanged {
        let entry = format!("{plural} {key}");
        state.changed.push(entry);
        return status(422, "Invalid", "the stand-in refuses a changed object");
    }
    let resource = &mut state.resources[index];
    let object = resource.objects.get_mut(&key).expect("present");
    object.resource_version = rv;
    object.old_key = false;
    object.writes += 1;
    let reply = object_json(resource, resource.objects.get(&key).expect("present"));
    axum::Json(reply).into_response()
}

/// The stand-in, serving on a loopback port until the test ends.
struct StandIn {
    state: Shared,
    address: SocketAddr,
}

impl StandIn {
    async fn start(resources: Vec<Resource>) -> Self {
        let state = Arc::new(Mutex::new(State {
            resources,
            next_rv: 1000,
            ..State::default()
        }));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state, address }
    }

    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    \
                 server: http://{}\ncontexts:\n- name: stand-in\n  context:\n    cluster: \
                 stand-in\n    user: tester\ncurrent-context: stand-in\nusers:\n- name: tester\n  \
                 user:\n    token: {TOKEN}\n",
                self.address
            ),
        )
        .expect("kubeconfig");
        path
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("state"))
    }

    fn requests(&self) -> Vec<String> {
        self.with(|state| state.requests.clone())
    }

    /// (list key, old key?, writes) of every object of `plural`.
    fn objects(&self, plural: &str) -> Vec<(String, bool, u32)> {
        self.with(|state| {
            state
                .resources
                .iter()
                .find(|r| r.plural == plural)
                .expect("resource")
                .objects
                .iter()
                .map(|(key, o)| (key.clone(), o.old_key, o.writes))
                .collect()
        })
    }
}

fn resource(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    names: impl IntoIterator<Item = (Option<String>, String)>,
) -> Resource {
    let mut objects = BTreeMap::new();
    let mut namespaced = false;
    for (i, (namespace, name)) in names.into_iter().enumerate() {
        namespaced = namespace.is_some();
        let mut metadata = json!({"name": name, "uid": format!("uid-{plural}-{i}")});
        if let Some(ns) = &namespace {
            metadata["namespace"] = json!(ns);
        }
        objects.insert(
            key_of(namespace.as_deref(), &name),
            Object {
                body: json!({"metadata": metadata, "data": {"value": format!("c2VjcmV0LXtp{i}")}}),
                resource_version: 100 + i as u64,
                old_key: true,
                writes: 0,
            },
        );
    }
    Resource {
        group,
        plural,
        kind,
        namespaced,
        objects,
    }
}

/// `count` cluster-scoped `widgets.example.com`, a custom resource: `w-0`, `w-1`, …
fn widgets(count: usize) -> Resource {
    resource(
        "example.com",
        "widgets",
        "Widget",
        (0..count).map(|i| (None, format!("w-{i}"))),
    )
}

fn namespaced(prefix: &str, namespaces: &[&str], per: usize) -> Vec<(Option<String>, String)> {
    namespaces
        .iter()
        .flat_map(|ns| (0..per).map(move |i| (Some((*ns).to_owned()), format!("{prefix}-{i:02}"))))
        .collect()
}

fn migrate_command(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("migrate")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--checkpoint")
        .arg(dir.join("checkpoint.json"))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KUBE_KMS_") {
            command.env_remove(name);
        }
    }
    command
}

async fn run(mut command: Command) -> (i32, String, String) {
    let output = tokio::task::spawn_blocking(move || command.output().expect("kube-kms runs"))
        .await
        .expect("join");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_rewrites_every_object_through_pages_conflicts_deletions_and_errors() {
    let stand_in = StandIn::start(vec![
        resource("", "secrets", "Secret", namespaced("s", &["a", "b"], 11)),
        resource("", "configmaps", "ConfigMap", namespaced("cm", &["x"], 6)),
        widgets(5),
    ])
    .await;
    stand_in.with(|state| {
        state.faults.concurrent_write.insert("b/s-03".into());
        state.faults.delete_after_list.insert("a/s-07".into());
        state.faults.unavailable_once.insert("a/s-01".into());
        state.faults.refuse.insert(
            "x/cm-04".into(),
            (
                422,
                "admission webhook \"deny.example.com\" denied the request".into(),
            ),
        );
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = stand_in.kubeconfig(dir.path());
    let args = [
        "--resources",
        "secrets,configmaps,widgets.example.com",
        "--page-size",
        "4",
        "--concurrency",
        "3",
        "--qps",
        "500",
    ];
    let (code, stdout, stderr) = run(migrate_command(dir.path(), &kubeconfig, &args)).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 1, "one object failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("configmaps x/cm-04: 422 Invalid: admission webhook"),
        "{stdout}"
    );
    assert!(
        stdout.contains("run the same command again to retry"),
        "{stdout}"
    );
    let secrets = stand_in.objects("secrets");
    assert_eq!(secrets.len(), 21, "a/s-07 was deleted mid-run");
    assert!(
        secrets.iter().all(|(_, old, writes)| !old && *writes == 1),
        "every secret rewritten once: {secrets:?}"
    );
    let configmaps = stand_in.objects("configmaps");
    assert!(
        configmaps
            .iter()
            .all(|(key, old, writes)| (key == "x/cm-04") == *old && *writes == u32::from(!*old))
    );
    assert!(
        stand_in
            .objects("widgets")
            .iter()
            .all(|(_, old, w)| !old && *w == 1)
    );
    assert!(
        stand_in.with(|s| s.changed.is_empty()),
        "no write changed an object"
    );

    // The request sequence: discovery, then paged lists with continue tokens, a conflict
    // answered by a read and a second write, a deletion skipped, a 503 retried.
    let requests = stand_in.requests();
    assert!(requests.iter().any(|r| r == "GET /api/v1"), "{requests:#?}");
    assert!(requests.iter().any(|r| r == "GET /apis/example.com/v1"));
    let secret_lists: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/secrets?"))
        .collect();
    assert_eq!(
        secret_lists.len(),
        6,
        "22 secrets in pages of 4: {secret_lists:#?}"
    );
    assert!(secret_lists[0].contains("limit=4") && !secret_lists[0].contains("continue="));
    assert!(secret_lists[1..].iter().all(|r| r.contains("continue=")));
    let conflicted: Vec<&String> = requests
        .iter()
        .filter(|r| r.ends_with("/namespaces/b/secrets/s-03"))
        .collect();
    assert_eq!(
        conflicted,
        [
            "PUT /api/v1/namespaces/b/secrets/s-03",
            "GET /api/v1/namespaces/b/secrets/s-03",
            "PUT /api/v1/namespaces/b/secrets/s-03"
        ]
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| *r == "PUT /api/v1/namespaces/a/secrets/s-01")
            .count(),
        2,
        "the 503 was retried"
    );
    assert!(
        requests
            .iter()
            .any(|r| r == "PUT /api/v1/namespaces/a/secrets/s-07")
    );
    assert!(
        requests
            .iter()
            .any(|r| r == "PUT /apis/example.com/v1/widgets/w-3")
    );
    assert!(!requests.iter().any(|r| r.contains("bindings")));
    assert!(
        stdout.contains("secrets")
            && stdout.lines().any(|l| l.starts_with("secrets ")
                && l.split_whitespace().nth(1) == Some("21")
                && l.split_whitespace().nth(2) == Some("1")),
        "21 rewritten, 1 skipped:\n{stdout}"
    );
    assert!(dir.path().join("checkpoint.json").exists());

    // The admission webhook is fixed: the next run retries only what failed.
    stand_in.with(|state| {
        state.faults.refuse.clear();
        state.requests.clear();
    });
    let (code, stdout, stderr) = run(migrate_command(dir.path(), &kubeconfig, &args)).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let requests = stand_in.requests();
    let writes: Vec<&String> = requests.iter().filter(|r| r.starts_with("PUT ")).collect();
    assert_eq!(
        writes,
        ["PUT /api/v1/namespaces/x/configmaps/cm-04"],
        "{requests:#?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("?limit=")),
        "nothing re-listed"
    );
    assert!(
        stand_in
            .objects("configmaps")
            .iter()
            .all(|(_, old, _)| !old)
    );
    assert!(
        !dir.path().join("checkpoint.json").exists(),
        "a finished run removes it"
    );
    assert!(
        stdout.contains("every object was rewritten or skipped"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_run_resumes_where_it_stopped_without_writing_anything_twice() {
    let stand_in = StandIn::start(vec![resource(
        "",
        "secrets",
        "Secret",
        namespaced("s", &["a", "b", "c", "d"], 10),
    )])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = stand_in.kubeconfig(dir.path());
    // 25 requests a second: slow enough to interrupt mid-run.
    let args = [
        "--resources",
        "secrets",
        "--page-size",
        "5",
        "--concurrency",
        "2",
        "--qps",
        "25",
    ];
    let child = migrate_command(dir.path(), &kubeconfig, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kube-kms migrate starts");
    let give_up = Instant::now() + Duration::from_secs(60);
    while stand_in.with(|s| s.requests.iter().filter(|r| r.starts_with("PUT")).count()) < 12 {
        assert!(
            Instant::now() < give_up,
            "no progress: {:#?}",
            stand_in.requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("interrupted; run the same command again to resume"),
        "{stdout}"
    );
    let done_first = stand_in
        .objects("secrets")
        .iter()
        .filter(|(_, old, _)| !old)
        .count();
    assert!(
        (12..40).contains(&done_first),
        "{done_first} done before the interruption"
    );
    let checkpoint: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("checkpoint.json")).expect("checkpoint kept"),
    )
    .expect("checkpoint is JSON");
    assert_eq!(checkpoint["current"]["resource"], "secrets");

    // Meanwhile etcd compacted: every continue token issued so far has expired.
    stand_in.with(|state| {
        state.faults.expire_tokens_before = state.token_serial + 1;
        state.requests.clear();
    });
    let (code, stdout, stderr) = run(migrate_command(
        dir.path(),
        &kubeconfig,
        &[&args[..4], &["--qps", "500"]].concat(),
    ))
    .await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let secrets = stand_in.objects("secrets");
    assert!(
        secrets.iter().all(|(_, old, writes)| !old && *writes == 1),
        "every object written exactly once over both runs: {secrets:?}"
    );
    let requests = stand_in.requests();
    let lists: Vec<&String> = requests.iter().filter(|r| r.contains("secrets?")).collect();
    if done_first >= 5 {
        assert!(
            lists[0].contains("continue="),
            "resumed at its page: {lists:#?}"
        );
        assert!(
            !lists[1].contains("continue="),
            "the expired token re-lists: {lists:#?}"
        );
    }
    let writes = requests.iter().filter(|r| r.starts_with("PUT")).count();
    assert_eq!(writes, 40 - done_first, "only what was left: {requests:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_writes_nothing_and_resources_come_from_the_encryption_config() {
    let stand_in = StandIn::start(vec![
        resource("", "secrets", "Secret", namespaced("s", &["a"], 7)),
        resource("", "configmaps", "ConfigMap", namespaced("cm", &["a"], 3)),
        widgets(2),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = stand_in.kubeconfig(dir.path());
    let encryption = dir.path().join("encryption.yaml");
    std::fs::write(
        &encryption,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
         - resources: [secrets, '*.example.com']\n    providers:\n      - kms:\n          \
         apiVersion: v2\n          name: kube-kms\n          endpoint: unix:///k.sock\n      \
         - identity: {}\n  - resources: [configmaps]\n    providers:\n      - identity: {}\n",
    )
    .expect("write");
    let (code, stdout, stderr) = run(migrate_command(
        dir.path(),
        &kubeconfig,
        &[
            "--encryption-config",
            encryption.to_str().expect("utf-8"),
            "--dry-run",
            "--page-size",
            "3",
        ],
    ))
    .await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("dry run"), "{stdout}");
    assert!(
        stderr.contains("secrets: 7 to rewrite,") && !stderr.contains("rewritten"),
        "a dry run never says it rewrote anything: {stderr}"
    );
    let requests = stand_in.requests();
    assert!(
        !requests.iter().any(|r| r.starts_with("PUT")),
        "{requests:#?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("configmaps?")),
        "identity-only: not listed"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /apis/example.com/v1/widgets?"))
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("secrets ") && l.contains(" 7 ")),
        "{stdout}"
    );
    assert!(!dir.path().join("checkpoint.json").exists());
}

/// The EncryptionConfiguration of Kubernetes' own documentation: `events` exempt (identity),
/// then `*.*` encrypted. Every served resource the file encrypts is rewritten, in one order,
/// past an aggregated API whose server is down and past a resource whose listing keeps
/// failing; `events` is never written.
#[tokio::test(flavor = "multi_thread")]
async fn a_wildcard_rewrites_what_the_file_encrypts_past_an_api_that_is_down() {
    let stand_in = StandIn::start(vec![
        resource("", "secrets", "Secret", namespaced("s", &["a"], 3)),
        resource("", "configmaps", "ConfigMap", namespaced("cm", &["a"], 2)),
        resource("", "events", "Event", namespaced("ev", &["a"], 2)),
        widgets(2),
    ])
    .await;
    stand_in.with(|state| {
        state.faults.unavailable_group = Some("metrics.k8s.io");
        state.faults.list_fails.insert("configmaps");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = stand_in.kubeconfig(dir.path());
    let encryption = dir.path().join("encryption.yaml");
    std::fs::write(
        &encryption,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
         - resources: [events]\n    providers:\n      - identity: {}\n  \
         - resources: ['*.*']\n    providers:\n      - kms:\n          apiVersion: v2\n          \
         name: kube-kms\n          endpoint: unix:///k.sock\n      - identity: {}\n",
    )
    .expect("write");
    let args = [
        "--encryption-config",
        encryption.to_str().expect("utf-8"),
        "--qps",
        "500",
    ];
    let (code, stdout, stderr) = run(migrate_command(dir.path(), &kubeconfig, &args)).await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 1, "a listing failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("skipping API group \"metrics.k8s.io\""),
        "{stderr}"
    );
    assert!(stdout.contains("listing configmaps stopped"), "{stdout}");
    // Sorted by group and resource: configmaps (whose listing fails) first, and the rest
    // still rewritten after it.
    for plural in ["secrets", "widgets"] {
        assert!(
            stand_in
                .objects(plural)
                .iter()
                .all(|(_, old, writes)| !old && *writes == 1),
            "{plural}: {:?}",
            stand_in.objects(plural)
        );
    }
    assert!(
        !stand_in.requests().iter().any(|r| r.contains("/events")),
        "events are exempt: never listed or written"
    );

    // The same command again: the checkpoint names the same resources, whatever order
    // discovery returned them in; only configmaps is left, and its listing still fails.
    let (code, stdout, stderr) = run(migrate_command(dir.path(), &kubeconfig, &args)).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(!stderr.contains("delete it to start afresh"), "{stderr}");
    assert!(
        stand_in
            .objects("secrets")
            .iter()
            .all(|(_, _, writes)| *writes == 1),
        "nothing written twice"
    );
}

/// `--verify` runs the census after a clean run and exits with its code: here etcd (a real one)
/// still holds an object under the key ring's older version, which the census reports.
#[tokio::test(flavor = "multi_thread")]
async fn verify_runs_the_census_after_a_clean_run() {
    use kube_kms::lifecycle::stored_value::EncryptedObject;
    use prost::Message;

    let stand_in = StandIn::start(vec![resource(
        "",
        "secrets",
        "Secret",
        namespaced("s", &["a"], 3),
    )])
    .await;
    let etcd = util::etcd::EtcdServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_dir = dir.path().join("keys");
    kube_kms::provider::local::LocalKeyRing::rotate(&key_dir).expect("version 1");
    kube_kms::provider::local::LocalKeyRing::rotate(&key_dir).expect("version 2");
    let ring = kube_kms::provider::local::list(&key_dir).expect("key ring");
    let record = |version: usize| {
        let object = EncryptedObject {
            encrypted_data: vec![1; 64],
            key_id: ring[version - 1].key_id.clone(),
            encrypted_dek_source: vec![2; 61],
            annotations: HashMap::from([
                ("kek.kube-kms.io".to_owned(), vec![3; 60]),
                (
                    "version.kube-kms.io".to_owned(),
                    version.to_string().into_bytes(),
                ),
            ]),
            encrypted_dek_source_type: 1,
        };
        [
            b"k8s:enc:kms:v2:kube-kms:".as_slice(),
            &object.encode_to_vec(),
        ]
        .concat()
    };
    etcd.put_all(vec![
        (b"/registry/secrets/a/s-00".to_vec(), record(2)),
        (b"/registry/secrets/a/s-01".to_vec(), record(1)),
    ])
    .await;
    let kubeconfig = stand_in.kubeconfig(dir.path());
    let key_dir = key_dir.display().to_string();
    let (code, stdout, stderr) = run(migrate_command(
        dir.path(),
        &kubeconfig,
        &[
            "--resources",
            "secrets",
            "--verify",
            "--etcd-endpoints",
            &etcd.endpoint,
            "--local-key-dir",
            &key_dir,
        ],
    ))
    .await;
    println!("{stdout}\n{stderr}");
    assert_eq!(code, 3, "the census's code:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("every object was rewritten or skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("local key ring version 1 (decrypt-only")
            && stdout.contains("still encrypts 1 object:"),
        "{stdout}"
    );
}
