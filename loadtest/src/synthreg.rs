//! A synthetic OCI registry: the read side of the OCI Distribution API over
//! a generated [`Fleet`], with every layer blob made again from its spec
//! when asked for, so 10,000 images need no disk.
//!
//! # Contract
//! - `GET /v2/`; `GET`/`HEAD /v2/<name>/manifests/<tag or digest>` (OCI
//!   image manifests, `Docker-Content-Digest`); `GET`/`HEAD
//!   /v2/<name>/blobs/<digest>` (configs kept in memory, layers generated on
//!   request: the same bytes every time); `GET /v2/<name>/tags/list` and
//!   `GET /v2/_catalog`, both paged with `n` and `last` and a `Link:
//!   <…>; rel="next"` header as the spec says. Unknown names, tags and
//!   digests get the spec's JSON errors (`NAME_UNKNOWN`, …) with 404.
//! - Options: bearer auth (`/token`, the `WWW-Authenticate` challenge, and
//!   basic credentials checked when set), every k-th blob GET answered 429
//!   with `Retry-After: 1`, and a latency added to every request.
//! - Counts: blob GETs per digest (answered 200), manifest requests, bytes
//!   of layers sent, throttled requests.
//! - A blob is served under any repository name that exists (a real
//!   registry also checks the blob is linked into that repository; nothing
//!   here depends on that).
//! - [`SyntheticRegistry::move_tags`] points tags at new images (a new code
//!   layer), as a release does.
//! - It runs on a tokio runtime on a thread of its own (usable from sync
//!   code and from any runtime); dropping the handle stops it.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use rayon::prelude::*;
use serde_json::json;
use sha2::Digest as _;

use crate::fleetgen::Fleet;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Page size when the client does not say (`n`); also the largest page.
const MAX_PAGE: usize = 1_000;

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Bearer tokens required; `Some((user, password))` also requires basic
    /// credentials at `/token`.
    pub bearer: Option<Option<(String, String)>>,
    /// Every k-th blob GET is answered 429 (0: never).
    pub throttle_every: u64,
    /// Added before every answer.
    pub latency: Duration,
    /// Where to listen (default `127.0.0.1:0`, a free loopback port); a
    /// cluster on other hosts needs an address they can reach.
    pub listen: Option<std::net::SocketAddr>,
}

/// A layer as served: its digest, uncompressed digest and size.
#[derive(Debug, Clone)]
struct LayerMeta {
    digest: String,
    diff_id: String,
    size: u64,
}

enum Blob {
    Layer(usize),
    Config(Arc<Vec<u8>>),
}

struct Shared {
    fleet: RwLock<Fleet>,
    options: RegistryOptions,
    token: String,
    layers: RwLock<Vec<Option<LayerMeta>>>,
    blobs: RwLock<HashMap<String, Blob>>,
    /// Manifest digest → bytes.
    manifests: RwLock<HashMap<String, Arc<Vec<u8>>>>,
    /// Image index → manifest digest.
    image_digests: RwLock<Vec<String>>,
    /// Repository → tag → image index.
    tags: RwLock<BTreeMap<String, BTreeMap<String, usize>>>,
    blob_gets: Mutex<HashMap<String, u64>>,
    blob_requests: AtomicU64,
    manifest_requests: AtomicU64,
    layer_bytes: AtomicU64,
    throttled: AtomicU64,
}

/// A running synthetic registry; see the module documentation.
pub struct SyntheticRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

impl SyntheticRegistry {
    /// Generates every layer the fleet uses once (in parallel) to learn its
    /// digest, builds the manifests, and starts serving on
    /// `options.listen` (default `127.0.0.1:0`).
    pub fn start(fleet: Fleet, options: RegistryOptions) -> std::io::Result<SyntheticRegistry> {
        let token = format!("synthetic-{:016x}", fleet.config.seed);
        let shared = Arc::new(Shared {
            layers: RwLock::new(vec![None; fleet.layers.len()]),
            fleet: RwLock::new(fleet),
            options,
            token,
            blobs: RwLock::default(),
            manifests: RwLock::default(),
            image_digests: RwLock::default(),
            tags: RwLock::default(),
            blob_gets: Mutex::default(),
            blob_requests: AtomicU64::new(0),
            manifest_requests: AtomicU64::new(0),
            layer_bytes: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        });
        shared.publish_images();
        {
            let fleet = shared.fleet.read().unwrap_or_else(|e| e.into_inner());
            let mut tags = shared.tags.write().unwrap_or_else(|e| e.into_inner());
            for repo in &fleet.repositories {
                tags.insert(repo.name.clone(), repo.tags.iter().cloned().collect());
            }
        }

        let listen = shared
            .options
            .listen
            .unwrap_or_else(|| (Ipv4Addr::LOCALHOST, 0).into());
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("synthetic-registry")
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("synthetic-registry-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let nodelay = |tcp: &mut tokio::net::TcpStream| {
                        let _ = tcp.set_nodelay(true);
                    };
                    use axum::serve::ListenerExt as _;
                    tokio::select! {
                        _ = axum::serve(listener.tap_io(nodelay), app).into_future() => {}
                        _ = stopped => {}
                    }
                });
                drop(runtime);
            })?;
        Ok(SyntheticRegistry {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`, as image references name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `repo:tag` on this registry.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host())
    }

    /// Blob GETs of `digest` answered 200.
    pub fn blob_gets(&self, digest: &str) -> u64 {
        lock(&self.shared.blob_gets).get(digest).copied().unwrap_or(0)
    }

    /// Every blob digest with its GETs answered 200.
    pub fn all_blob_gets(&self) -> HashMap<String, u64> {
        lock(&self.shared.blob_gets).clone()
    }

    /// Blob GETs and HEADs that arrived (throttled ones included).
    pub fn blob_requests(&self) -> u64 {
        self.shared.blob_requests.load(Ordering::Relaxed)
    }

    pub fn manifest_requests(&self) -> u64 {
        self.shared.manifest_requests.load(Ordering::Relaxed)
    }

    /// Bytes of layer blobs sent.
    pub fn layer_bytes(&self) -> u64 {
        self.shared.layer_bytes.load(Ordering::Relaxed)
    }

    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::Relaxed)
    }

    /// The digest and compressed size of every layer the fleet's images
    /// use (each once).
    pub fn layer_digests(&self) -> Vec<(String, u64)> {
        read(&self.shared.layers)
            .iter()
            .flatten()
            .map(|m| (m.digest.clone(), m.size))
            .collect()
    }

    /// The layer digests of image `image`, lowest first.
    pub fn image_layers(&self, image: usize) -> Vec<String> {
        let fleet = read(&self.shared.fleet);
        let layers = read(&self.shared.layers);
        fleet.images[image]
            .layers
            .iter()
            .filter_map(|&l| layers[l].as_ref().map(|m| m.digest.clone()))
            .collect()
    }

    /// Compressed bytes of image `image`'s layers.
    pub fn image_size(&self, image: usize) -> u64 {
        let fleet = read(&self.shared.fleet);
        let layers = read(&self.shared.layers);
        fleet.images[image]
            .layers
            .iter()
            .filter_map(|&l| layers[l].as_ref().map(|m| m.size))
            .sum()
    }

    /// Manifest digest of image `image`.
    pub fn image_digest(&self, image: usize) -> String {
        read(&self.shared.image_digests)[image].clone()
    }

    /// Every tag served now: (repository, tag, manifest digest).
    pub fn tag_digests(&self) -> Vec<(String, String, String)> {
        let digests = read(&self.shared.image_digests);
        let tags = read(&self.shared.tags);
        let mut all = Vec::new();
        for (repo, repo_tags) in tags.iter() {
            for (tag, &image) in repo_tags {
                all.push((repo.clone(), tag.clone(), digests[image].clone()));
            }
        }
        all
    }

    /// A copy of the fleet as served now (moved tags included).
    pub fn fleet(&self) -> Fleet {
        read(&self.shared.fleet).clone()
    }

    /// Moves `count` tags (chosen from `seed`) to new images: the same base
    /// and dependencies, a new code layer. A tag `latest` points at moves
    /// with it. Returns the (repository, tag) pairs moved.
    pub fn move_tags(&self, count: usize, seed: u64) -> Vec<(String, String)> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut moved = Vec::new();
        {
            let mut fleet = write(&self.shared.fleet);
            let mut tags = write(&self.shared.tags);
            let repos: Vec<String> = tags.keys().cloned().collect();
            if repos.is_empty() {
                return moved;
            }
            let mut tried = 0;
            while moved.len() < count && tried < count * 20 {
                tried += 1;
                let repo = &repos[rng.usize(..repos.len())];
                let Some(repo_tags) = tags.get_mut(repo) else {
                    continue;
                };
                let releases: Vec<String> = repo_tags.keys().filter(|t| *t != "latest").cloned().collect();
                let tag = releases[rng.usize(..releases.len())].clone();
                if moved.iter().any(|(r, t)| r == repo && *t == tag) {
                    continue;
                }
                let old = repo_tags[&tag];
                let revision = 1 + rng.u32(..1_000_000);
                let new = fleet.new_revision(old, revision);
                repo_tags.insert(tag.clone(), new);
                if repo_tags.get("latest") == Some(&old) {
                    repo_tags.insert("latest".to_owned(), new);
                }
                moved.push((repo.clone(), tag));
            }
            write(&self.shared.layers).resize(fleet.layers.len(), None);
        }
        self.shared.publish_images();
        moved
    }
}

impl Drop for SyntheticRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Learns the digest of every layer not known yet (generating it once)
    /// and builds the config and manifest of every image not built yet.
    fn publish_images(&self) {
        let fleet = read(&self.fleet);
        let missing: Vec<usize> = {
            let layers = read(&self.layers);
            let mut wanted = vec![false; fleet.layers.len()];
            for image in &fleet.images {
                for &l in &image.layers {
                    wanted[l] = layers[l].is_none();
                }
            }
            (0..wanted.len()).filter(|&l| wanted[l]).collect()
        };
        let metas: Vec<(usize, LayerMeta)> = missing
            .par_iter()
            .map(|&l| {
                let layer = fleet.build_layer(l);
                let meta = LayerMeta {
                    size: layer.size(),
                    digest: layer.digest,
                    diff_id: layer.diff_id,
                };
                (l, meta)
            })
            .collect();
        {
            let mut layers = write(&self.layers);
            let mut blobs = write(&self.blobs);
            for (l, meta) in metas {
                blobs.insert(meta.digest.clone(), Blob::Layer(l));
                layers[l] = Some(meta);
            }
        }
        let layers = read(&self.layers);
        let mut digests = write(&self.image_digests);
        let mut manifests = write(&self.manifests);
        let mut blobs = write(&self.blobs);
        for image in &fleet.images[digests.len()..] {
            let metas: Vec<&LayerMeta> = image.layers.iter().filter_map(|&l| layers[l].as_ref()).collect();
            let config = serde_json::to_vec(&json!({
                "created": "2024-01-01T00:00:00Z",
                "architecture": "amd64",
                "os": "linux",
                "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
                "rootfs": { "type": "layers", "diff_ids": metas.iter().map(|m| &m.diff_id).collect::<Vec<_>>() },
                "history": metas.iter().map(|_| json!({ "created": "2024-01-01T00:00:00Z" })).collect::<Vec<_>>(),
            }))
            .unwrap_or_default();
            let config_digest = sha256(&config);
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
                "layers": metas.iter().map(|m| json!({
                    "mediaType": OCI_LAYER_GZIP, "digest": m.digest, "size": m.size,
                })).collect::<Vec<_>>(),
            }))
            .unwrap_or_default();
            let digest = sha256(&manifest);
            blobs.insert(config_digest, Blob::Config(Arc::new(config)));
            manifests.insert(digest.clone(), Arc::new(manifest));
            digests.push(digest);
        }
    }
}

/// What a `/v2/…` path asks for.
enum Route<'a> {
    Base,
    Token,
    Catalog,
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Tags(&'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    if path == "/token" {
        return Some(Route::Token);
    }
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Route::Manifest(name, reference));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Some(Route::Blob(name, digest));
    }
    None
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn name_unknown() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        "repository name not known to registry",
    )
}

fn query_param<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A page of `items` (sorted) after `last`, at most `n`, and whether more follow.
fn page<'a>(items: impl Iterator<Item = &'a String>, uri: &Uri) -> (Vec<String>, Option<String>) {
    let n = query_param(uri, "n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(MAX_PAGE)
        .clamp(1, MAX_PAGE);
    let last = query_param(uri, "last");
    let mut after = items.filter(|i| last.is_none_or(|l| i.as_str() > l));
    let items: Vec<String> = after.by_ref().take(n).cloned().collect();
    let next = (after.next().is_some())
        .then(|| items.last().cloned())
        .flatten()
        .map(|l| format!("{}?n={n}&last={l}", uri.path()));
    (items, next)
}

fn json_page(key: &str, name: Option<&str>, items: Vec<String>, next: Option<String>) -> Response<Body> {
    let body = match name {
        Some(name) => json!({ "name": name, key: items }),
        None => json!({ key: items }),
    };
    let mut r = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default();
    if let Some(next) = next
        && let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
    {
        r.headers_mut().insert(header::LINK, v);
    }
    r
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    if shared.options.bearer.is_none() {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token)
}

fn challenge(headers: &HeaderMap) -> Response<Body> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer realm=\"http://{host}/token\",service=\"synthetic\""
    )) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn token(shared: &Shared, headers: &HeaderMap) -> Response<Body> {
    if let Some(Some((user, password))) = &shared.options.bearer {
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "));
        if given != Some(expected.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad credentials");
        }
    }
    let body = json!({ "token": shared.token, "access_token": shared.token, "expires_in": 300 });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn with_digest(r: &mut Response<Body>, digest: &str, len: usize, media_type: &str) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(digest) {
        h.insert("docker-content-digest", v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    if !shared.options.latency.is_zero() {
        tokio::time::sleep(shared.options.latency).await;
    }
    let path = uri.path().to_owned();
    let Some(route) = route(&path) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    };
    if let Route::Token = route {
        return token(&shared, &headers);
    }
    if !authorized(&shared, &headers) {
        return challenge(&headers);
    }
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "read-only registry",
        );
    }
    match route {
        Route::Token => unreachable!("answered above"),
        Route::Base => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header("docker-distribution-api-version", "registry/2.0")
            .body(Body::from("{}"))
            .unwrap_or_default(),
        Route::Catalog => {
            let tags = read(&shared.tags);
            let (items, next) = page(tags.keys(), &uri);
            json_page("repositories", None, items, next)
        }
        Route::Tags(name) => {
            let tags = read(&shared.tags);
            let Some(repo) = tags.get(name) else {
                return name_unknown();
            };
            let (items, next) = page(repo.keys(), &uri);
            json_page("tags", Some(name), items, next)
        }
        Route::Manifest(name, reference) => {
            shared.manifest_requests.fetch_add(1, Ordering::Relaxed);
            let digest = if reference.starts_with("sha256:") {
                reference.to_owned()
            } else {
                let tags = read(&shared.tags);
                let Some(repo) = tags.get(name) else {
                    return name_unknown();
                };
                let Some(&image) = repo.get(reference) else {
                    return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown");
                };
                read(&shared.image_digests)[image].clone()
            };
            let Some(bytes) = read(&shared.manifests).get(&digest).cloned() else {
                return error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown");
            };
            let mut r = if head {
                Response::new(Body::empty())
            } else {
                Response::new(Body::from(bytes.as_ref().clone()))
            };
            with_digest(&mut r, &digest, bytes.len(), OCI_MANIFEST);
            r
        }
        Route::Blob(name, digest) => {
            if !read(&shared.tags).contains_key(name) {
                return name_unknown();
            }
            let n = shared.blob_requests.fetch_add(1, Ordering::Relaxed) + 1;
            let every = shared.options.throttle_every;
            if !head && every > 0 && n % every == 0 {
                shared.throttled.fetch_add(1, Ordering::Relaxed);
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "slow down");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            let blob = match read(&shared.blobs).get(digest) {
                Some(Blob::Layer(l)) => Ok(*l),
                Some(Blob::Config(bytes)) => Err(bytes.clone()),
                None => return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry"),
            };
            let (bytes, media_type) = match blob {
                Err(config) => (config.as_ref().clone(), OCI_CONFIG),
                Ok(layer) => {
                    if head {
                        let size = read(&shared.layers)[layer].as_ref().map_or(0, |m| m.size);
                        let mut r = Response::new(Body::empty());
                        with_digest(&mut r, digest, size as usize, "application/octet-stream");
                        return r;
                    }
                    let s = Arc::clone(&shared);
                    let built =
                        tokio::task::spawn_blocking(move || read(&s.fleet).build_layer(layer).blob).await;
                    let Ok(bytes) = built else {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "UNKNOWN",
                            "generating the layer failed",
                        );
                    };
                    shared
                        .layer_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    (bytes, "application/octet-stream")
                }
            };
            let len = bytes.len();
            let mut r = if head {
                Response::new(Body::empty())
            } else {
                *lock(&shared.blob_gets).entry(digest.to_owned()).or_default() += 1;
                Response::new(Body::from(bytes))
            };
            with_digest(&mut r, digest, len, media_type);
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_names_with_slashes() {
        assert!(matches!(route("/v2/"), Some(Route::Base)));
        assert!(matches!(route("/v2/_catalog"), Some(Route::Catalog)));
        assert!(matches!(
            route("/v2/team1/svc2/tags/list"),
            Some(Route::Tags("team1/svc2"))
        ));
        assert!(matches!(
            route("/v2/team1/svc2/manifests/v1.0.0"),
            Some(Route::Manifest("team1/svc2", "v1.0.0"))
        ));
        assert!(matches!(
            route("/v2/a/b/c/blobs/sha256:00"),
            Some(Route::Blob("a/b/c", "sha256:00"))
        ));
        assert!(route("/v3/").is_none());
    }

    #[test]
    fn pages_follow_last_and_link_the_next() {
        let items: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        let uri: Uri = "/v2/r/tags/list?n=2".parse().unwrap();
        let (page1, next) = page(items.iter(), &uri);
        assert_eq!(page1, ["a", "b"]);
        assert_eq!(next.as_deref(), Some("/v2/r/tags/list?n=2&last=b"));
        let uri: Uri = "/v2/r/tags/list?n=2&last=d".parse().unwrap();
        let (page3, next) = page(items.iter(), &uri);
        assert_eq!(page3, ["e"]);
        assert!(next.is_none());
    }
}
