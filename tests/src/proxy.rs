//! [`RegistryProxy`]: a counting, fault-injecting HTTP reverse proxy in front of
//! a [`Registry`], for tests of how workers fetch blobs: how often, how many at
//! once, and what they do when the registry is slow or says "429".
//!
//! # Contract
//! - It runs inside the test process, on a tokio runtime of its own on a
//!   dedicated thread, so it works from synchronous tests and from
//!   `#[tokio::test]` alike. It listens on `127.0.0.1:<free port>`.
//! - Every request is forwarded to the upstream (`registry.url()`): method,
//!   path and query, headers except the hop-by-hop ones and `Host`, and the
//!   body. The answer comes back as is: status, headers (`Content-Length`,
//!   `Docker-Content-Digest`, `WWW-Authenticate`, `Location`, …) and body,
//!   streamed (a blob is never held whole in memory). Redirects are passed
//!   through, not followed. Nothing is rewritten, so a `Location` the
//!   registry builds from its own `Host` points at the registry itself:
//!   push through the registry, pull through the proxy.
//! - Faults apply to blob GETs only (`GET /v2/<name>/blobs/<digest>`; not
//!   `HEAD`, not uploads): the first N are answered `429 Too Many Requests`
//!   with `Retry-After` and an OCI error envelope, without reaching the
//!   upstream ([`RegistryProxyBuilder::throttle_blobs`]); the others wait
//!   [`blob_delay`](RegistryProxyBuilder::blob_delay) before being forwarded
//!   and have their body streamed at most
//!   [`blob_rate`](RegistryProxyBuilder::blob_rate) bytes per second. Delay
//!   and rate can be changed while it runs.
//! - Counts: per digest, every blob GET that arrived
//!   ([`blob_requests`](RegistryProxy::blob_requests)) and those the upstream
//!   answered 2xx ([`blob_gets`](RegistryProxy::blob_gets), counted when the
//!   upstream's status arrives); the 429s it made up
//!   ([`throttled`](RegistryProxy::throttled)); and the high-water mark of
//!   blob GETs in progress at once
//!   ([`concurrent_blob_gets_max`](RegistryProxy::concurrent_blob_gets_max)).
//!   A blob GET is in progress from its arrival (throttled ones included,
//!   for the instant they take) until the last byte of its body has been
//!   handed to the connection, or the client went away. When the upstream
//!   sent a `Content-Length`, the GET stops counting as in progress just
//!   before its last byte is handed on, so a client that reads a body to the
//!   end and then starts the next GET is never seen overlapping with itself.
//! - Manifest requests are counted by method
//!   ([`manifest_gets`](RegistryProxy::manifest_gets),
//!   [`manifest_heads`](RegistryProxy::manifest_heads)), and every request
//!   ([`requests`](RegistryProxy::requests)).
//! - Dropping the handle stops the server and cancels requests in flight.

use std::collections::HashMap;
use std::future::IntoFuture as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};

use crate::registry::Registry;
use crate::{HarnessError, Result};

/// Pieces a rate-limited body is cut into, per second of its rate.
const PIECES_PER_SECOND: u64 = 20;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Options for [`RegistryProxy`]; see [`RegistryProxy::builder`].
#[derive(Clone, Debug)]
pub struct RegistryProxyBuilder {
    upstream: String,
    blob_delay: Duration,
    throttle: Option<(u64, Duration)>,
    blob_rate: Option<u64>,
}

impl RegistryProxyBuilder {
    /// Sleep this long before forwarding each blob GET (throttled ones are
    /// answered at once). Default: no delay.
    pub fn blob_delay(mut self, delay: Duration) -> Self {
        self.blob_delay = delay;
        self
    }

    /// Answer the first `count` blob GETs with `429 Too Many Requests`,
    /// `Retry-After: <retry_after in whole seconds, rounded up>` and the body
    /// `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`,
    /// without forwarding them.
    pub fn throttle_blobs(mut self, count: u64, retry_after: Duration) -> Self {
        self.throttle = Some((count, retry_after));
        self
    }

    /// Stream blob bodies at most `bytes_per_sec` bytes per second (in pieces
    /// of a twentieth of that). Default: as fast as the upstream sends.
    pub fn blob_rate(mut self, bytes_per_sec: u64) -> Self {
        self.blob_rate = Some(bytes_per_sec);
        self
    }

    /// Binds `127.0.0.1:0` and starts serving on a thread of its own.
    pub fn start(self) -> Result<RegistryProxy> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| HarnessError::io("binding 127.0.0.1:0 for the registry proxy", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| HarnessError::io("making the registry proxy's listener non-blocking", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the registry proxy's port", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-registry-proxy-rt")
            .enable_all()
            .build()
            .map_err(|e| HarnessError::io("building the registry proxy's tokio runtime", e))?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| HarnessError::io(format!("registering the registry proxy's socket {addr}"), e))?
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|source| HarnessError::Request {
                what: "building the registry proxy's HTTP client".into(),
                source,
            })?;
        let (throttle_left, retry_after) = self.throttle.unwrap_or((0, Duration::ZERO));
        let shared = Arc::new(Shared {
            upstream: self.upstream.trim_end_matches('/').to_owned(),
            http,
            blob_delay_micros: AtomicU64::new(micros(self.blob_delay)),
            blob_rate: AtomicU64::new(self.blob_rate.unwrap_or(0)),
            throttle_left: AtomicU64::new(throttle_left),
            retry_after_secs: AtomicU64::new(whole_secs(retry_after)),
            throttled: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            in_flight_max: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            manifest_gets: AtomicU64::new(0),
            manifest_heads: AtomicU64::new(0),
            digests: Mutex::new(HashMap::new()),
        });
        // As registries do (Go's net/http sets it): the tail of a blob must
        // not wait on the client's delayed ACK.
        let nodelay = |tcp: &mut tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("strata-registry-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = axum::serve(listener.tap_io(nodelay), app).into_future() => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here cancels every connection task.
                drop(runtime);
            })
            .map_err(|e| HarnessError::io("spawning the registry proxy's thread", e))?;
        Ok(RegistryProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running proxy; see the module documentation for what it does.
pub struct RegistryProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RegistryProxy {
    /// A proxy in front of `registry` (upstream `registry.url()`).
    pub fn builder(registry: &Registry) -> RegistryProxyBuilder {
        RegistryProxy::builder_for_url(&registry.url())
    }

    /// A proxy in front of any HTTP server (`http://host:port`).
    pub fn builder_for_url(upstream: &str) -> RegistryProxyBuilder {
        RegistryProxyBuilder {
            upstream: upstream.to_owned(),
            blob_delay: Duration::ZERO,
            throttle: None,
            blob_rate: None,
        }
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference that goes
    /// through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Blob GETs for `digest` that the upstream answered 2xx, over every
    /// repository (counted when the status arrives, before the body streams).
    pub fn blob_gets(&self, digest: &str) -> u64 {
        self.shared.counts(digest).gets
    }

    /// Every blob GET for `digest` that arrived: throttled, failed and
    /// successful ones.
    pub fn blob_requests(&self, digest: &str) -> u64 {
        self.shared.counts(digest).requests
    }

    /// Every request that reached the proxy (manifests, tag lists, blobs,
    /// `/v2/`): a count that shows whether anything talked to the registry.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Manifest `GET`s that arrived (by tag or digest), over every repository.
    pub fn manifest_gets(&self) -> u64 {
        self.shared.manifest_gets.load(Ordering::SeqCst)
    }

    /// Manifest `HEAD`s that arrived, over every repository.
    pub fn manifest_heads(&self) -> u64 {
        self.shared.manifest_heads.load(Ordering::SeqCst)
    }

    /// Blob GETs the upstream answered 2xx, over every digest.
    pub fn blob_gets_total(&self) -> u64 {
        let digests = self.shared.digests.lock().unwrap_or_else(|e| e.into_inner());
        digests.values().map(|c| c.gets).sum()
    }

    /// How many blob GETs were answered 429 by the proxy.
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// The highest number of blob GETs in progress at once since the start.
    pub fn concurrent_blob_gets_max(&self) -> u64 {
        self.shared.in_flight_max.load(Ordering::SeqCst)
    }

    /// From now on, answer the next `count` blob GETs with `429` and
    /// `Retry-After` (as [`RegistryProxyBuilder::throttle_blobs`] does from the start).
    pub fn set_throttle(&self, count: u64, retry_after: Duration) {
        self.shared
            .retry_after_secs
            .store(whole_secs(retry_after), Ordering::SeqCst);
        self.shared.throttle_left.store(count, Ordering::SeqCst);
    }

    /// Changes the delay before each blob GET from now on.
    pub fn set_blob_delay(&self, delay: Duration) {
        self.shared
            .blob_delay_micros
            .store(micros(delay), Ordering::SeqCst);
    }

    /// Changes the blob streaming rate (`None`: unlimited); bodies already
    /// streaming follow the new rate from their next piece.
    pub fn set_blob_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared
            .blob_rate
            .store(bytes_per_sec.unwrap_or(0), Ordering::SeqCst);
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// State shared by the handle and the request handlers.
struct Shared {
    upstream: String,
    http: reqwest::Client,
    blob_delay_micros: AtomicU64,
    /// Bytes per second; 0 means unlimited.
    blob_rate: AtomicU64,
    throttle_left: AtomicU64,
    retry_after_secs: AtomicU64,
    throttled: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
    /// Every request that arrived (manifests, tags, blobs, `/v2/`).
    requests: AtomicU64,
    /// `GET` and `HEAD` of `/v2/<name>/manifests/<reference>`.
    manifest_gets: AtomicU64,
    manifest_heads: AtomicU64,
    digests: Mutex<HashMap<String, Counts>>,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    requests: u64,
    gets: u64,
}

impl Shared {
    fn counts(&self, digest: &str) -> Counts {
        let digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        digests.get(digest).copied().unwrap_or_default()
    }

    fn count(&self, digest: &str, update: impl FnOnce(&mut Counts)) {
        let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        update(digests.entry(digest.to_owned()).or_default());
    }

    /// True (and one fewer left) while throttled answers remain.
    fn take_throttle(&self) -> bool {
        self.throttle_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn rate(&self) -> Option<u64> {
        Some(self.blob_rate.load(Ordering::SeqCst)).filter(|&r| r > 0)
    }
}

/// One blob GET in progress; dropping it ends it.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.in_flight_max.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The digest of a `GET /v2/<name>/blobs/<digest>`; `None` for anything else.
fn blob_get_digest(method: &Method, path: &str) -> Option<String> {
    if method != Method::GET {
        return None;
    }
    let (name, digest) = path.strip_prefix("/v2/")?.rsplit_once("/blobs/")?;
    let valid = !name.is_empty() && !digest.contains('/') && digest.contains(':');
    valid.then(|| digest.to_owned())
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if request.uri().path().starts_with("/v2/") && request.uri().path().contains("/manifests/") {
        match *request.method() {
            Method::GET => shared.manifest_gets.fetch_add(1, Ordering::SeqCst),
            Method::HEAD => shared.manifest_heads.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
    }
    let Some(digest) = blob_get_digest(request.method(), request.uri().path()) else {
        return match forward(&shared, request).await {
            Ok(upstream) => respond(upstream, &shared, None),
            Err(e) => bad_gateway(&e),
        };
    };
    let in_flight = InFlight::enter(&shared);
    shared.count(&digest, |c| c.requests += 1);
    if shared.take_throttle() {
        shared.throttled.fetch_add(1, Ordering::SeqCst);
        return too_many_requests(shared.retry_after_secs.load(Ordering::SeqCst));
    }
    let delay = Duration::from_micros(shared.blob_delay_micros.load(Ordering::SeqCst));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match forward(&shared, request).await {
        Ok(upstream) => {
            if upstream.status().is_success() {
                shared.count(&digest, |c| c.gets += 1);
            }
            respond(upstream, &shared, Some(in_flight))
        }
        Err(e) => bad_gateway(&e),
    }
}

/// Removes the hop-by-hop headers, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

async fn forward(
    shared: &Shared,
    request: Request,
) -> std::result::Result<reqwest::Response, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{target}", shared.upstream);
    // A request with neither header has no body (RFC 9112 §6.3); sending a
    // stream would add `Transfer-Encoding: chunked` to a plain GET.
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let mut builder = shared.http.request(parts.method, url).headers(headers);
    if has_body {
        builder = builder.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    builder.send().await
}

type Upstream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The upstream's answer as the proxy's, its body streamed through (paced
/// and tracked when it is a blob GET's).
fn respond(upstream: reqwest::Response, shared: &Arc<Shared>, in_flight: Option<InFlight>) -> Response {
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    strip_hop_by_hop(&mut headers);
    let remaining = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let state = BodyState {
        paced: in_flight.is_some(),
        in_flight,
        upstream: Box::pin(upstream.bytes_stream()),
        pending: Bytes::new(),
        remaining,
        shared: Arc::clone(shared),
        pace: None,
        done: false,
    };
    let mut response = Response::new(Body::from_stream(futures::stream::unfold(state, next_piece)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

struct BodyState {
    upstream: Upstream,
    pending: Bytes,
    /// Bytes of the declared `Content-Length` not yet handed on.
    remaining: Option<u64>,
    shared: Arc<Shared>,
    paced: bool,
    in_flight: Option<InFlight>,
    pace: Option<Pace>,
    done: bool,
}

/// Rate bookkeeping since the rate last changed.
struct Pace {
    rate: u64,
    start: Instant,
    sent: u64,
}

async fn next_piece(mut st: BodyState) -> Option<(reqwest::Result<Bytes>, BodyState)> {
    if st.done {
        return None;
    }
    while st.pending.is_empty() {
        match st.upstream.next().await {
            Some(Ok(chunk)) => st.pending = chunk,
            Some(Err(e)) => {
                st.done = true;
                st.in_flight = None;
                return Some((Err(e), st));
            }
            None => return None,
        }
    }
    let rate = if st.paced { st.shared.rate() } else { None };
    let piece = match rate {
        None => {
            st.pace = None;
            std::mem::take(&mut st.pending)
        }
        Some(rate) => {
            let len = st
                .pending
                .len()
                .min(usize::try_from((rate / PIECES_PER_SECOND).max(1)).unwrap_or(usize::MAX));
            let piece = st.pending.split_to(len);
            let pace = match st.pace.take() {
                Some(pace) if pace.rate == rate => pace,
                _ => Pace {
                    rate,
                    start: Instant::now(),
                    sent: 0,
                },
            };
            let pace = st.pace.insert(pace);
            pace.sent += piece.len() as u64;
            let due = pace.start + Duration::from_secs_f64(pace.sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            piece
        }
    };
    if let Some(remaining) = st.remaining.as_mut() {
        *remaining = remaining.saturating_sub(piece.len() as u64);
        if *remaining == 0 {
            st.in_flight = None;
        }
    }
    Some((Ok(piece), st))
}

/// Seconds for `Retry-After`, rounded up.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn too_many_requests(retry_after_secs: u64) -> Response {
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

fn bad_gateway(error: &reqwest::Error) -> Response {
    let mut response = Response::new(Body::from(format!(
        "strata-harness registry proxy: upstream request failed: {error}"
    )));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Compression, Image, Layer};
    use crate::registry::RegistryClient;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Bytes gzip cannot shrink (xorshift), so the blob is about `len` long.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    async fn pushed(registry: &Registry, repo: &str, len: usize) -> std::result::Result<Image, HarnessError> {
        let layer = Layer::builder()
            .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
            .file("data.bin", noise(len))
            .build(Compression::Gzip)?;
        let image = Image::builder().layer(layer).platform("linux/amd64").build()?;
        image.push(registry, repo, "v1").await?;
        Ok(image)
    }

    #[test]
    fn recognises_blob_gets() {
        let d = "sha256:aa";
        assert_eq!(
            blob_get_digest(&Method::GET, "/v2/a/b/blobs/sha256:aa").as_deref(),
            Some(d)
        );
        assert_eq!(blob_get_digest(&Method::HEAD, "/v2/a/b/blobs/sha256:aa"), None);
        assert_eq!(blob_get_digest(&Method::GET, "/v2/a/blobs/uploads/"), None);
        assert_eq!(blob_get_digest(&Method::GET, "/v2/a/blobs/uploads/123-abc"), None);
        assert_eq!(blob_get_digest(&Method::GET, "/v2/a/manifests/v1"), None);
        assert_eq!(blob_get_digest(&Method::GET, "/v2/blobs/sha256:aa"), None);
    }

    #[tokio::test]
    async fn forwards_blobs_and_manifests_unchanged_and_counts_blob_gets() -> TestResult {
        let registry = Registry::start()?;
        let image = pushed(&registry, "strata/proxied", 10_000).await?;
        let layer = &image.layers[0];
        let proxy = RegistryProxy::builder(&registry).start()?;
        assert_eq!(proxy.host(), format!("127.0.0.1:{}", proxy.port()));
        let client = RegistryClient::new(&proxy.url(), None);

        let blob = client.get_blob("strata/proxied", &layer.digest).await?;
        assert_eq!(blob, layer.blob);
        let manifest = client.get_manifest("strata/proxied", "v1").await?;
        assert_eq!(manifest.bytes, image.manifest);
        assert_eq!(
            manifest.digest_header.as_deref(),
            Some(image.manifest_digest.as_str())
        );
        // HEADs and manifests are forwarded but are not blob GETs.
        assert!(client.blob_exists("strata/proxied", &layer.digest).await?);

        // Headers come back as the registry sent them.
        let url = format!("{}/v2/strata/proxied/blobs/{}", proxy.url(), layer.digest);
        let raw = reqwest::get(&url).await?;
        assert_eq!(raw.status(), 200);
        let header = |name: &str| {
            raw.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("docker-content-digest"), Some(layer.digest.clone()));
        assert_eq!(header("content-length"), Some(layer.blob.len().to_string()));
        assert_eq!(raw.bytes().await?.as_ref(), layer.blob.as_slice());

        // A 404 is passed through and counted as a request, not as a GET.
        let missing = format!("sha256:{}", "0".repeat(64));
        let err = client.get_blob("strata/proxied", &missing).await.unwrap_err();
        assert_eq!(err.http_status(), Some(404));

        assert_eq!(proxy.blob_gets(&layer.digest), 2);
        assert_eq!(proxy.blob_requests(&layer.digest), 2);
        assert_eq!(proxy.blob_gets(&missing), 0);
        assert_eq!(proxy.blob_requests(&missing), 1);
        assert_eq!(proxy.blob_gets(&image.config_digest), 0);
        assert_eq!(proxy.throttled(), 0);
        // One at a time, read to the end before the next.
        assert_eq!(proxy.concurrent_blob_gets_max(), 1);
        // The registry saw exactly the GETs the proxy forwarded.
        assert_eq!(registry.blob_fetch_count(&layer.digest)?, 2);
        Ok(())
    }

    #[tokio::test]
    async fn first_blob_gets_are_throttled_with_retry_after() -> TestResult {
        let registry = Registry::start()?;
        let image = pushed(&registry, "strata/throttled", 1_000).await?;
        let layer = &image.layers[0];
        let proxy = RegistryProxy::builder(&registry)
            .throttle_blobs(2, Duration::from_secs(1))
            .start()?;
        let url = format!("{}/v2/strata/throttled/blobs/{}", proxy.url(), layer.digest);
        for _ in 0..2 {
            let response = reqwest::get(&url).await?;
            assert_eq!(response.status(), 429);
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
            let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
            assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
            assert_eq!(body["errors"][0]["message"], "slow down");
        }
        let response = reqwest::get(&url).await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await?.as_ref(), layer.blob.as_slice());

        assert_eq!(proxy.throttled(), 2);
        assert_eq!(proxy.blob_requests(&layer.digest), 3);
        assert_eq!(proxy.blob_gets(&layer.digest), 1);
        // Throttled GETs never reached the registry.
        assert_eq!(registry.blob_fetch_count(&layer.digest)?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn delayed_blob_gets_overlap_and_the_high_water_mark_shows_it() -> TestResult {
        let registry = Registry::start()?;
        let image = pushed(&registry, "strata/delayed", 1_000).await?;
        let layer = &image.layers[0];
        let proxy = RegistryProxy::builder(&registry)
            .blob_delay(Duration::from_millis(500))
            .start()?;
        let client = RegistryClient::new(&proxy.url(), None);
        let get = || client.get_blob("strata/delayed", &layer.digest);
        let (a, b, c) = tokio::join!(get(), get(), get());
        for blob in [a?, b?, c?] {
            assert_eq!(blob, layer.blob);
        }
        assert_eq!(proxy.concurrent_blob_gets_max(), 3);
        proxy.set_blob_delay(Duration::ZERO);
        get().await?;
        assert_eq!(proxy.blob_gets(&layer.digest), 4);
        assert_eq!(proxy.concurrent_blob_gets_max(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn blob_rate_paces_the_body() -> TestResult {
        let registry = Registry::start()?;
        let image = pushed(&registry, "strata/paced", 200 * 1024).await?;
        let layer = &image.layers[0];
        let len = layer.blob.len() as u64;
        assert!(
            len >= 200 * 1024,
            "noise did not stay incompressible: {len} bytes"
        );
        // About one second for the whole blob.
        let proxy = RegistryProxy::builder(&registry).blob_rate(len).start()?;
        let client = RegistryClient::new(&proxy.url(), None);

        let start = Instant::now();
        let blob = client.get_blob("strata/paced", &layer.digest).await?;
        let elapsed = start.elapsed();
        assert_eq!(blob, layer.blob);
        assert!(
            elapsed >= Duration::from_millis(500),
            "a {len}-byte blob at {len} B/s took only {elapsed:?}"
        );

        // Unlimited again: still the same bytes (no bound asserted on speed).
        proxy.set_blob_rate(None);
        assert_eq!(client.get_blob("strata/paced", &layer.digest).await?, layer.blob);
        assert_eq!(proxy.blob_gets(&layer.digest), 2);
        Ok(())
    }
}
