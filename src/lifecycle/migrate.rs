//! `kube-kms migrate`: re-encrypts stored objects by rewriting them through kube-apiserver,
//! which writes every object with its EncryptionConfiguration's first provider — the current
//! key_id. (kube-apiserver also rewrites an unchanged object when its stored data is stale:
//! under another key_id or provider; that is what makes a no-op update re-encrypt.)
//!
//! For each resource: list a page (`limit` + `continue`, never everything at once), PUT each
//! object back unchanged with its resourceVersion, a bounded number at a time and within a
//! request-rate limit shared by every request; on 409 Conflict read the object again and retry;
//! an object deleted meanwhile (404) is skipped; 429 and 5xx answers are retried with backoff;
//! anything else fails that object with the server's reason. After every page the
//! [`Checkpoint`] is saved, so an interrupted run resumes at the page it was on; an expired
//! continue token (410 Gone) re-lists from the start and skips what was done. `--dry-run` lists
//! and counts and writes nothing.
//!
//! Talks to the API server only through kube-rs (`kube::Api<DynamicObject>`), so the requests a
//! test stand-in sees are the ones a real kube-apiserver sees. Never logs object contents.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams, TypeMeta};
use kube::discovery::{self, Scope, verbs};
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;

use super::checkpoint::{Checkpoint, CheckpointError, Counts, FailedObject, Position, list_key};
use super::counted;
use super::progress::Progress;

/// How many times a conflicting update is read again and retried.
pub const MAX_CONFLICT_RETRIES: u32 = 5;
/// How many times a throttled (429) or failing (5xx) request is retried.
pub const MAX_TRANSIENT_RETRIES: u32 = 4;
/// The first backoff after a throttled or failing request; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// A resource to rewrite, resolved by discovery.
#[derive(Debug, Clone)]
pub struct Target {
    /// `resource[.group]`, as an EncryptionConfiguration names it.
    pub name: String,
    /// Group, version, kind, plural.
    pub api: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Objects per list request.
    pub page_size: u32,
    /// Objects rewritten at once.
    pub concurrency: usize,
    /// Requests per second, all kinds together.
    pub qps: f64,
    /// List and count only.
    pub dry_run: bool,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
}

/// Why a migration could not run (objects that fail are not errors: they are in the summary).
#[derive(Debug)]
pub enum MigrateError {
    /// A resource selector is malformed or names nothing the cluster serves.
    Resource(String),
    /// Discovery or listing failed for good.
    Api {
        /// What was being done.
        action: String,
        /// The client's error (boxed: it is large).
        source: Box<kube::Error>,
    },
    /// The checkpoint cannot be used.
    Checkpoint(CheckpointError),
    /// No usable kubeconfig or in-cluster account.
    Kubeconfig(String),
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Resource(reason) => f.write_str(reason),
            Self::Api { action, source } => write!(f, "{action}: {source}"),
            Self::Checkpoint(error) => error.fmt(f),
            Self::Kubeconfig(reason) => write!(f, "cannot reach kube-apiserver: {reason}"),
        }
    }
}

impl std::error::Error for MigrateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Api { source, .. } => Some(source.as_ref()),
            Self::Checkpoint(error) => Some(error),
            Self::Resource(_) | Self::Kubeconfig(_) => None,
        }
    }
}

impl From<CheckpointError> for MigrateError {
    fn from(error: CheckpointError) -> Self {
        Self::Checkpoint(error)
    }
}

/// One resource's results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSummary {
    /// `resource[.group]`.
    pub resource: String,
    /// Counts over every run of this checkpoint (this run alone for a dry run).
    pub counts: Counts,
    /// Objects listed in this run.
    pub listed: u64,
    /// Time spent in this run.
    pub elapsed: Duration,
    /// Whether it was finished by an earlier run.
    pub finished_earlier: bool,
    /// Why listing stopped, if it did.
    pub list_error: Option<String>,
}

/// The end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The API server.
    pub server: String,
    /// Per resource, in order.
    pub resources: Vec<ResourceSummary>,
    /// Objects that failed (including those from earlier runs not yet rewritten).
    pub failed: Vec<FailedObject>,
    /// Whether the run was stopped before the end.
    pub interrupted: bool,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// The checkpoint file, and whether it was kept (to resume or retry) or removed (done).
    pub checkpoint: PathBuf,
    /// Whether the checkpoint remains.
    pub checkpoint_kept: bool,
}

impl Summary {
    /// Whether everything was rewritten or skipped.
    pub fn succeeded(&self) -> bool {
        !self.interrupted
            && self.failed.is_empty()
            && self.resources.iter().all(|r| r.list_error.is_none())
    }

    /// The summary as text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kube-kms migrate against {}{}:",
            self.server,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
        let rewritten = if self.dry_run {
            "TO REWRITE"
        } else {
            "REWRITTEN"
        };
        let _ = writeln!(
            out,
            "{:<32} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9}",
            "RESOURCE", rewritten, "SKIPPED", "FAILED", "CONFLICTS", "TIME", "RATE"
        );
        for resource in &self.resources {
            let failed = self
                .failed
                .iter()
                .filter(|f| f.resource == resource.resource)
                .count();
            let seconds = resource.elapsed.as_secs_f64();
            let rate = if seconds > 0.0 {
                format!("{:.0}/s", resource.listed as f64 / seconds)
            } else {
                "-".to_owned()
            };
            let time = if resource.finished_earlier {
                "earlier".to_owned()
            } else {
                format!("{seconds:.1}s")
            };
            let _ = writeln!(
                out,
                "{:<32} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9}",
                resource.resource,
                resource.counts.rewritten,
                resource.counts.skipped,
                failed,
                resource.counts.conflicts,
                time,
                rate
            );
        }
        let _ = writeln!(
            out,
            "skipped: deleted before they could be rewritten; conflicts: concurrent writes, read \
             again and retried"
        );
        for resource in &self.resources {
            if let Some(error) = &resource.list_error {
                let _ = writeln!(out, "listing {} stopped: {error}", resource.resource);
            }
        }
        if !self.failed.is_empty() {
            let _ = writeln!(out, "failed:");
            for failure in &self.failed {
                let _ = writeln!(
                    out,
                    "  {} {}: {}",
                    failure.resource,
                    failure.list_key(),
                    failure.reason
                );
            }
        }
        let outcome = if self.dry_run {
            "dry run finished".to_owned()
        } else if self.interrupted {
            format!(
                "interrupted; run the same command again to resume from {}",
                self.checkpoint.display()
            )
        } else if self.succeeded() {
            "every object was rewritten or skipped; the checkpoint was removed".to_owned()
        } else {
            let listing_stopped = self.resources.iter().any(|r| r.list_error.is_some());
            let what = match (self.failed.len(), listing_stopped) {
                (0, _) => "a listing stopped".to_owned(),
                (failed, false) => format!("{} failed", counted(failed as u64, "object")),
                (failed, true) => format!(
                    "{} failed and a listing stopped",
                    counted(failed as u64, "object")
                ),
            };
            format!(
                "{what}; {} keeps where the run stopped and what failed: run the same command \
                 again to retry",
                self.checkpoint.display()
            )
        };
        let _ = writeln!(out, "Outcome: {outcome}");
        out
    }
}

/// A client for the API server, from `kubeconfig` (or `$KUBECONFIG`, `~/.kube/config`, or the
/// in-cluster service account, as kubectl resolves them) and `context`; and the server's URL.
pub async fn connect(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<(Client, String), MigrateError> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    // rustls cannot pick a provider when two are compiled in; an already installed one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let failed = |error: &dyn std::fmt::Display| MigrateError::Kubeconfig(error.to_string());
    let mut config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| MigrateError::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| failed(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| failed(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| failed(&e))?,
    };
    let server = config.cluster_url.to_string();
    // Retries are this module's own (`with_retries`: a few, seconds apart, then the object or
    // listing is reported). kube's default layer retries 429, 503 and 504 up to 15 times with
    // a backoff that grows to minutes, so one aggregated API that is down held a run for five.
    config.default_retry = false;
    let client = Client::try_from(config).map_err(|e| failed(&e))?;
    Ok((client, server))
}

/// A resource selector, as an EncryptionConfiguration spells one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    /// `resource` or `resource.group`.
    One { group: String, resource: String },
    /// `*.group` (`*.` is the core group).
    Group(String),
    /// `*.*`.
    All,
}

fn parse_selector(text: &str) -> Result<Selector, MigrateError> {
    let text = text.trim();
    if text == "*.*" {
        return Ok(Selector::All);
    }
    if let Some(group) = text.strip_prefix("*.") {
        return Ok(Selector::Group(group.to_owned()));
    }
    let (resource, group) = text.split_once('.').unwrap_or((text, ""));
    let valid = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if resource.is_empty() || !valid(resource) || !valid(group) {
        return Err(MigrateError::Resource(format!(
            "{text:?} is not a resource: expected e.g. secrets, deployments.apps, *.apps or *.*"
        )));
    }
    Ok(Selector::One {
        group: group.to_owned(),
        resource: resource.to_owned(),
    })
}

/// Resolves resource selectors (`secrets`, `deployments.apps`, `*.apps`, `*.*`) to the
/// resources the cluster serves that can be listed, read and updated, in the order given.
pub async fn resolve(client: &Client, selectors: &[String]) -> Result<Vec<Target>, MigrateError> {
    let selectors = selectors
        .iter()
        .map(|s| parse_selector(s))
        .collect::<Result<Vec<_>, _>>()?;
    let api_error = |action: String| {
        move |source| MigrateError::Api {
            action,
            source: Box::new(source),
        }
    };
    // The groups to discover: those named, and with `*.*` every group the cluster serves.
    let named: BTreeSet<&str> = selectors
        .iter()
        .filter_map(|s| match s {
            Selector::One { group, .. } | Selector::Group(group) => Some(group.as_str()),
            Selector::All => None,
        })
        .collect();
    let mut groups: BTreeSet<String> = named.iter().map(|g| (*g).to_owned()).collect();
    if selectors.contains(&Selector::All) {
        groups.insert(String::new());
        let listed = client
            .list_api_groups()
            .await
            .map_err(api_error("listing the cluster's API groups".into()))?;
        groups.extend(listed.groups.into_iter().map(|group| group.name));
    }
    let mut served: Vec<(ApiResource, discovery::ApiCapabilities)> = Vec::new();
    for group in &groups {
        match discovery::group(client, group).await {
            // Each resource at its most stable version: some are served only in a version the
            // group does not prefer.
            Ok(found) => served.extend(found.resources_by_stability()),
            // A group only `*.*` reached (an aggregated API whose server is down, say) is
            // skipped, as kubectl skips it; one the selectors name is looked for below.
            Err(error) if !named.contains(group.as_str()) => {
                eprintln!(
                    "kube-kms migrate: skipping API group {group:?}, which cannot be discovered: \
                     {}",
                    reason(&error)
                );
            }
            Err(kube::Error::Discovery(_)) => {}
            Err(source) => {
                return Err(MigrateError::Api {
                    action: format!("discovering API group {group:?}"),
                    source: Box::new(source),
                });
            }
        }
    }
    // One order for the same cluster in every run, so that a checkpoint's resources match.
    served.sort_by(|(a, _), (b, _)| (&a.group, &a.plural).cmp(&(&b.group, &b.plural)));
    let mut targets: Vec<Target> = Vec::new();
    for selector in &selectors {
        let mut matched = 0;
        {
            for (api, caps) in served.iter().cloned() {
                let selected = match selector {
                    Selector::One {
                        group: wanted,
                        resource,
                    } => api.group == *wanted && api.plural == *resource,
                    Selector::Group(wanted) => api.group == *wanted,
                    Selector::All => true,
                };
                let rewritable = [verbs::LIST, verbs::GET, verbs::UPDATE]
                    .iter()
                    .all(|verb| caps.supports_operation(verb));
                if !selected || !rewritable {
                    continue;
                }
                matched += 1;
                let name = super::stored_value::resource_name(&api.group, &api.plural);
                if targets.iter().all(|t| t.name != name) {
                    targets.push(Target {
                        name,
                        namespaced: caps.scope == Scope::Namespaced,
                        api,
                    });
                }
            }
        }
        if matched == 0
            && let Selector::One { group, resource } = selector
        {
            return Err(MigrateError::Resource(format!(
                "the cluster serves no resource {} that can be listed and updated",
                super::stored_value::resource_name(group, resource)
            )));
        }
    }
    Ok(targets)
}

/// Spaces requests at least `1/qps` apart, across every task.
struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    fn new(qps: f64) -> Self {
        let qps = if qps.is_finite() && qps > 0.0 {
            qps
        } else {
            1.0
        };
        Self {
            interval: Duration::from_secs_f64(1.0 / qps),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What became of one object.
enum Rewrite {
    Done { conflicts: u64 },
    Deleted { conflicts: u64 },
    Failed { reason: String, conflicts: u64 },
}

fn status_of(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || (500..=599).contains(&status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

/// Runs `call` (after the rate limiter), retrying throttled and failing answers with backoff.
async fn with_retries<T, F, Fut>(limiter: &RateLimiter, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        limiter.wait().await;
        match call().await {
            Err(error) if is_transient(&error) && attempt < MAX_TRANSIENT_RETRIES => {
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            result => return result,
        }
    }
}

/// The API for one object of `target`.
fn object_api(client: &Client, target: &Target, namespace: Option<&str>) -> Api<DynamicObject> {
    match (target.namespaced, namespace) {
        (true, Some(namespace)) => Api::namespaced_with(client.clone(), namespace, &target.api),
        _ => Api::all_with(client.clone(), &target.api),
    }
}

/// Writes `object` back unchanged; on a conflict reads it again and retries.
async fn rewrite(
    api: Api<DynamicObject>,
    target: &Target,
    mut object: DynamicObject,
    limiter: &RateLimiter,
) -> Rewrite {
    let name = object.name_any();
    let types = TypeMeta {
        api_version: target.api.api_version.clone(),
        kind: target.api.kind.clone(),
    };
    let mut conflicts = 0;
    loop {
        // List items carry no apiVersion and kind; an update names them.
        object.types = Some(types.clone());
        let params = PostParams::default();
        let result = with_retries(limiter, || api.replace(&name, &params, &object)).await;
        match result {
            Ok(_) => return Rewrite::Done { conflicts },
            Err(error) if status_of(&error) == Some(404) => {
                return Rewrite::Deleted { conflicts };
            }
            Err(error) if status_of(&error) == Some(409) => {
                conflicts += 1;
                if conflicts > u64::from(MAX_CONFLICT_RETRIES) {
                    return Rewrite::Failed {
                        reason: format!(
                            "still conflicting after {MAX_CONFLICT_RETRIES} retries: {}",
                            reason(&error)
                        ),
                        conflicts,
                    };
                }
                match with_retries(limiter, || api.get(&name)).await {
                    Ok(fresh) => object = fresh,
                    Err(error) if status_of(&error) == Some(404) => {
                        return Rewrite::Deleted { conflicts };
                    }
                    Err(error) => {
                        return Rewrite::Failed {
                            reason: format!(
                                "reading it again after a conflict: {}",
                                reason(&error)
                            ),
                            conflicts,
                        };
                    }
                }
            }
            Err(error) => {
                return Rewrite::Failed {
                    reason: reason(&error),
                    conflicts,
                };
            }
        }
    }
}

/// Everything one run shares.
struct Run<'a> {
    client: &'a Client,
    options: &'a MigrateOptions,
    limiter: Arc<RateLimiter>,
    stop: &'a AtomicBool,
    checkpoint: Checkpoint,
}

impl Run<'_> {
    fn save(&self) -> Result<(), MigrateError> {
        if self.options.dry_run {
            Ok(())
        } else {
            Ok(self.checkpoint.save(&self.options.checkpoint)?)
        }
    }

    fn record(
        &mut self,
        resource: &str,
        namespace: Option<String>,
        name: String,
        outcome: Rewrite,
    ) {
        let counts = self
            .checkpoint
            .counts
            .entry(resource.to_owned())
            .or_default();
        match outcome {
            Rewrite::Done { conflicts } => {
                counts.rewritten += 1;
                counts.conflicts += conflicts;
            }
            Rewrite::Deleted { conflicts } => {
                counts.skipped += 1;
                counts.conflicts += conflicts;
            }
            Rewrite::Failed { reason, conflicts } => {
                counts.conflicts += conflicts;
                self.checkpoint.failed.push(FailedObject {
                    resource: resource.to_owned(),
                    namespace,
                    name,
                    reason,
                });
            }
        }
    }

    /// Retries the objects earlier runs could not rewrite: read each, write it back.
    async fn retry_failed(&mut self, targets: &[Target]) -> Result<(), MigrateError> {
        let earlier = std::mem::take(&mut self.checkpoint.failed);
        for failed in earlier {
            if self.stop.load(Ordering::SeqCst) {
                self.checkpoint.failed.push(failed);
                continue;
            }
            let Some(target) = targets.iter().find(|t| t.name == failed.resource) else {
                continue;
            };
            let api = object_api(self.client, target, failed.namespace.as_deref());
            let outcome = match with_retries(&self.limiter, || api.get(&failed.name)).await {
                Ok(object) => rewrite(api, target, object, &self.limiter).await,
                Err(error) if status_of(&error) == Some(404) => Rewrite::Deleted { conflicts: 0 },
                Err(error) => Rewrite::Failed {
                    reason: reason(&error),
                    conflicts: 0,
                },
            };
            self.record(&failed.resource, failed.namespace, failed.name, outcome);
        }
        self.save()
    }

    /// Lists and rewrites every object of `target`, from the checkpoint's position.
    async fn resource(&mut self, target: &Target) -> ResourceSummary {
        let started = Instant::now();
        let mut summary = ResourceSummary {
            resource: target.name.clone(),
            ..ResourceSummary::default()
        };
        let mut position = match &self.checkpoint.current {
            Some(position) if position.resource == target.name => position.clone(),
            _ => Position {
                resource: target.name.clone(),
                ..Position::default()
            },
        };
        let progress = Progress::new(&target.name, None);
        let list_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &target.api);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let mut params = ListParams::default().limit(self.options.page_size);
            if let Some(token) = &position.continue_token {
                params = params.continue_token(token);
            }
            let page = match with_retries(&self.limiter, || list_api.list(&params)).await {
                Ok(page) => page,
                Err(error)
                    if status_of(&error) == Some(410) && position.continue_token.is_some() =>
                {
                    // The continue token expired (etcd compacted past it): list again from the
                    // start; what was done before `after` is skipped, not written twice.
                    position.continue_token = None;
                    continue;
                }
                Err(error) => {
                    summary.list_error = Some(reason(&error));
                    break;
                }
            };
            let next_token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
            let remaining = page
                .metadata
                .remaining_item_count
                .and_then(|n| u64::try_from(n).ok());
            let items: Vec<DynamicObject> = page
                .items
                .into_iter()
                .filter(|item| {
                    let key = list_key(item.metadata.namespace.as_deref(), &item.name_any());
                    position.after.as_ref().is_none_or(|after| key > *after)
                })
                .collect();
            summary.listed += u64::try_from(items.len()).unwrap_or(0);
            if let Some(remaining) = remaining {
                progress.set_total(summary.listed + remaining);
            }
            let done = self.page(target, items, &progress).await;
            if let Some(last) = done {
                position.after = Some(last);
            }
            if self.stop.load(Ordering::SeqCst) {
                // Stopped inside this page: resume on it, after the last object done in order.
                self.checkpoint.current = Some(position.clone());
                break;
            }
            match next_token {
                Some(token) => {
                    // `after` stays: if this token expires, a re-list skips what was done.
                    position.continue_token = Some(token);
                    self.checkpoint.current = Some(position.clone());
                    if let Err(error) = self.save() {
                        summary.list_error = Some(error.to_string());
                        break;
                    }
                }
                None => {
                    self.checkpoint.current = None;
                    self.checkpoint.done.push(target.name.clone());
                    break;
                }
            }
        }
        progress.finish();
        summary.elapsed = started.elapsed();
        summary.counts = self
            .checkpoint
            .counts
            .get(&target.name)
            .copied()
            .unwrap_or_default();
        summary
    }

    /// Rewrites one page's objects, at most `concurrency` at once. Returns the list key of the
    /// last object of the longest prefix of the page that is done (all of it unless stopped).
    async fn page(
        &mut self,
        target: &Target,
        items: Vec<DynamicObject>,
        progress: &Progress,
    ) -> Option<String> {
        let keys: Vec<(Option<String>, String)> = items
            .iter()
            .map(|item| (item.metadata.namespace.clone(), item.name_any()))
            .collect();
        let mut finished = vec![false; items.len()];
        if self.options.dry_run {
            let counts = self
                .checkpoint
                .counts
                .entry(target.name.clone())
                .or_default();
            counts.rewritten += u64::try_from(items.len()).unwrap_or(0);
            progress.advance(u64::try_from(items.len()).unwrap_or(0));
            return keys.last().map(|(ns, name)| list_key(ns.as_deref(), name));
        }
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.options.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (index, item) in items.into_iter().enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
                break;
            };
            let api = object_api(self.client, target, item.metadata.namespace.as_deref());
            let limiter = Arc::clone(&self.limiter);
            let task_target = target.clone();
            tasks.spawn(async move {
                let outcome = rewrite(api, &task_target, item, &limiter).await;
                drop(permit);
                (index, outcome)
            });
            // Record what has finished so far, so counts and the bar move while the page runs.
            while let Some(joined) = tasks.try_join_next() {
                self.finish_task(&target.name, joined, &keys, &mut finished, progress);
            }
        }
        while let Some(joined) = tasks.join_next().await {
            self.finish_task(&target.name, joined, &keys, &mut finished, progress);
        }
        let done = finished.iter().take_while(|f| **f).count();
        done.checked_sub(1)
            .map(|last| list_key(keys[last].0.as_deref(), &keys[last].1))
    }

    fn finish_task(
        &mut self,
        resource: &str,
        joined: Result<(usize, Rewrite), tokio::task::JoinError>,
        keys: &[(Option<String>, String)],
        finished: &mut [bool],
        progress: &Progress,
    ) {
        let Ok((index, outcome)) = joined else {
            return;
        };
        let (namespace, name) = keys[index].clone();
        self.record(resource, namespace, name, outcome);
        finished[index] = true;
        progress.advance(1);
    }
}

/// Rewrites every object of `targets` through `client`. `server` names the API server in the
/// checkpoint; `stop` set to true ends the run after the objects in flight, keeping the
/// checkpoint.
pub async fn migrate(
    client: &Client,
    server: &str,
    targets: &[Target],
    options: &MigrateOptions,
    stop: &AtomicBool,
) -> Result<Summary, MigrateError> {
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let checkpoint = if options.dry_run {
        Checkpoint::new(server, &names)
    } else {
        Checkpoint::load(&options.checkpoint, server, &names)?
            .unwrap_or_else(|| Checkpoint::new(server, &names))
    };
    let mut run = Run {
        client,
        options,
        limiter: Arc::new(RateLimiter::new(options.qps)),
        stop,
        checkpoint,
    };
    if !run.checkpoint.failed.is_empty() {
        run.retry_failed(targets).await?;
    }
    let mut resources = Vec::new();
    for target in targets {
        if run.checkpoint.done.contains(&target.name) {
            resources.push(ResourceSummary {
                resource: target.name.clone(),
                counts: run
                    .checkpoint
                    .counts
                    .get(&target.name)
                    .copied()
                    .unwrap_or_default(),
                finished_earlier: true,
                ..ResourceSummary::default()
            });
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // A listing that keeps failing (say, a page holding an object kube-apiserver can no
        // longer decrypt) ends that resource, not the run: the others still go, and the
        // checkpoint keeps where it stopped.
        let summary = run.resource(target).await;
        if !progress_is_drawn() {
            eprintln!(
                "{}: {} {}, {} skipped, {} retried in {:.1}s",
                summary.resource,
                summary.counts.rewritten,
                if options.dry_run {
                    "to rewrite"
                } else {
                    "rewritten"
                },
                summary.counts.skipped,
                counted(summary.counts.conflicts, "conflict"),
                summary.elapsed.as_secs_f64()
            );
        }
        resources.push(summary);
        run.save()?;
    }
    let interrupted = stop.load(Ordering::SeqCst)
        || resources.len() < targets.len() && !resources.iter().any(|r| r.list_error.is_some());
    let mut summary = Summary {
        server: server.to_owned(),
        resources,
        failed: run.checkpoint.failed.clone(),
        interrupted,
        dry_run: options.dry_run,
        checkpoint: options.checkpoint.clone(),
        checkpoint_kept: !options.dry_run,
    };
    if !options.dry_run {
        if summary.succeeded() {
            Checkpoint::remove(&options.checkpoint)?;
            summary.checkpoint_kept = false;
        } else {
            run.save()?;
        }
    }
    Ok(summary)
}

fn progress_is_drawn() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_as_an_encryption_configuration_spells_them() {
        assert_eq!(
            parse_selector("secrets").unwrap(),
            Selector::One {
                group: String::new(),
                resource: "secrets".into()
            }
        );
        assert_eq!(
            parse_selector("widgets.example.com").unwrap(),
            Selector::One {
                group: "example.com".into(),
                resource: "widgets".into()
            }
        );
        assert_eq!(
            parse_selector("*.apps").unwrap(),
            Selector::Group("apps".into())
        );
        assert_eq!(
            parse_selector("*.").unwrap(),
            Selector::Group(String::new())
        );
        assert_eq!(parse_selector("*.*").unwrap(), Selector::All);
        for bad in ["", "Secrets", "secrets/status", ".apps"] {
            assert!(parse_selector(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_requests() {
        let limiter = RateLimiter::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
