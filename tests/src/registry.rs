//! [`Registry`]: Debian's `docker-registry` (distribution 2.8) on a free loopback
//! port, storage in a temporary directory, optionally behind htpasswd basic auth;
//! and [`RegistryClient`], the few Distribution API calls tests need.
//!
//! The registry's access log (one line per request, on its stdout) goes to a
//! file, so [`Registry::blob_fetch_count`] can count how often each blob was
//! downloaded. Dropping the handle kills the process and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Probe};
use crate::{HarnessError, Result};

const START_LIMIT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 5;

/// Manifest media types the client accepts on GET, so the registry returns
/// whatever was pushed instead of converting it.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Options for [`Registry`]; see [`Registry::builder`].
#[derive(Default, Clone)]
pub struct RegistryBuilder {
    htpasswd: Option<(String, String)>,
}

impl RegistryBuilder {
    /// Require HTTP basic auth with this one user (bcrypt htpasswd file).
    pub fn htpasswd(mut self, user: &str, password: &str) -> Self {
        self.htpasswd = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Starts the registry and waits until `/v2/` answers (200, or 401 with auth).
    pub fn start(self) -> Result<Registry> {
        let binary = binary(
            "STRATA_DOCKER_REGISTRY",
            "docker-registry",
            "apt-get install -y docker-registry",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temp dir for docker-registry", e))?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage)
            .map_err(|e| HarnessError::io(format!("creating {}", storage.display()), e))?;
        let htpasswd_file = match &self.htpasswd {
            Some((user, password)) => Some(write_htpasswd(dir.path(), user, password)?),
            None => None,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = util::free_port()?;
            let config = dir.path().join("config.yml");
            let text = config_yaml(port, &storage, htpasswd_file.as_deref());
            std::fs::write(&config, text)
                .map_err(|e| HarnessError::io(format!("writing {}", config.display()), e))?;
            match spawn(&binary, &config, dir.path(), port) {
                Ok(child) => {
                    return Ok(Registry {
                        binary,
                        dir,
                        port,
                        child: Some(child),
                        credentials: self.htpasswd,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| HarnessError::Binary("docker-registry: no attempt made".into())))
    }
}

/// A running registry.
pub struct Registry {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    credentials: Option<(String, String)>,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Result<Registry> {
        RegistryBuilder::default().start()
    }

    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The htpasswd user and password, when the registry requires auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// A client that authenticates with the registry's credentials, if any.
    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.url(), self.credentials.clone())
    }

    /// A client that never sends credentials.
    pub fn anonymous_client(&self) -> RegistryClient {
        RegistryClient::new(&self.url(), None)
    }

    /// The server process's id while it runs (for CPU accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The filesystem storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The access log: one Apache combined-format line per request.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// Replaces the stored bytes of a pushed blob, behind the registry's back:
    /// it then serves `bytes` under `digest`, which no push could do (the
    /// registry checks digests on upload). For tests of digest verification.
    pub fn overwrite_blob(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .ok_or_else(|| HarnessError::Image(format!("not a sha256 digest: {digest}")))?;
        let path = self.storage_dir().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        if !path.is_file() {
            return Err(HarnessError::Image(format!(
                "blob {digest} is not stored in the registry"
            )));
        }
        std::fs::write(&path, bytes).map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// How many successful `GET /v2/<name>/blobs/<digest>` requests the
    /// registry has served, over every repository. `HEAD`s and refused
    /// requests (401, 404) do not count.
    pub fn blob_fetch_count(&self, digest: &str) -> Result<usize> {
        self.get_count(&format!("/blobs/{digest}"))
    }

    /// How many successful `GET /v2/...` requests whose path (without query)
    /// ends with `suffix` the registry has served: `/manifests/v1` counts
    /// manifest fetches by that tag.
    ///
    /// The registry writes a request's log line as its handler returns, which
    /// can be a moment after the client has read the last byte; so this first
    /// waits (at most 2 s) until the log stops growing.
    pub fn get_count(&self, suffix: &str) -> Result<usize> {
        let path = self.access_log_path();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let start = Instant::now();
        let mut last = size(&path);
        while start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
            let now = size(&path);
            if now == last {
                break;
            }
            last = now;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| HarnessError::io(format!("reading {}", path.display()), e))?;
        Ok(text
            .lines()
            .filter(|line| is_successful_get(line, suffix))
            .count())
    }

    /// Kills the registry (SIGKILL) and waits for it to exit; its storage stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            util::kill(&mut child);
        }
    }

    /// Stops the registry if it runs and starts it again on the same port with
    /// the same storage and credentials, waiting until `/v2/` answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let config = self.dir.path().join("config.yml");
        let mut last_error = None;
        // The port may be briefly unavailable; retry it a few times.
        for _ in 0..PORT_ATTEMPTS {
            match spawn(&self.binary, &config, self.dir.path(), self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last_error.unwrap_or_else(|| HarnessError::Binary("docker-registry: no attempt made".into())))
    }

    /// The registry's own log (stderr), for diagnosing a failing test.
    pub fn log(&self) -> String {
        util::log_tail(&self.dir.path().join("registry.log"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True for an access-log line of a successful GET of a path ending in `suffix`:
/// `127.0.0.1 - - [date] "GET /v2/a/b/blobs/sha256:... HTTP/1.1" 200 123 "" "ua"`.
fn is_successful_get(line: &str, suffix: &str) -> bool {
    let Some((_, rest)) = line.split_once("\"GET ") else {
        return false;
    };
    let Some((target, rest)) = rest.split_once(" HTTP/") else {
        return false;
    };
    let path = target.split('?').next().unwrap_or(target);
    let Some(status) = rest.split_once("\" ").and_then(|(_, r)| r.split(' ').next()) else {
        return false;
    };
    path.starts_with("/v2/") && path.ends_with(suffix) && status.starts_with('2')
}

fn config_yaml(port: u16, storage: &Path, htpasswd: Option<&Path>) -> String {
    let mut text = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: \"{}\"\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: strata-test-secret\n",
        storage.display()
    );
    if let Some(file) = htpasswd {
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: strata-test\n    path: \"{}\"\n",
            file.display()
        ));
    }
    text
}

fn write_htpasswd(dir: &Path, user: &str, password: &str) -> Result<PathBuf> {
    let htpasswd = binary("STRATA_HTPASSWD", "htpasswd", "apt-get install -y apache2-utils")?;
    // -B: distribution accepts only bcrypt entries.
    let out = Command::new(&htpasswd)
        .args(["-Bbn", user, password])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(format!("running {}", htpasswd.display()), e))?;
    if !out.status.success() {
        return Err(HarnessError::Binary(format!(
            "{} -Bbn failed with {}: {}",
            htpasswd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, &out.stdout)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

fn spawn(binary: &Path, config: &Path, dir: &Path, port: u16) -> Result<Child> {
    let open = |name: &str| {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| HarnessError::io(format!("opening {}", path.display()), e))
    };
    let mut child = Command::new(binary)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(open("access.log")?)
        .stderr(open("registry.log")?)
        .spawn()
        .map_err(|e| HarnessError::io(format!("starting {}", binary.display()), e))?;
    let ready = || match util::http_status(port, "GET", "/v2/") {
        Some(200 | 401) => Probe::Ready,
        _ => Probe::NotYet,
    };
    match util::wait_ready(&mut child, START_LIMIT, ready) {
        Ok(()) => Ok(child),
        Err(reason) => {
            util::kill(&mut child);
            Err(HarnessError::NotReady {
                what: format!("{} on port {port}", binary.display()),
                reason,
                log: util::log_tail(&dir.join("registry.log")),
            })
        }
    }
}

fn binary(env: &str, name: &str, install: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    util::on_path(name)
        .into_iter()
        .next()
        .ok_or_else(|| HarnessError::Binary(format!("{name} not found on PATH (set {env}, or `{install}`)")))
}

/// A manifest as fetched: its bytes, `Content-Type` and `Docker-Content-Digest`.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest_header: Option<String>,
}

/// The handful of Distribution API calls the tests need: monolithic blob
/// upload, manifest put, and plain GETs. Hand-written over reqwest because the
/// harness must also push things no client would (tampered blobs, odd media
/// types) and observe raw statuses such as 401.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    auth: Option<(String, String)>,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client for `base` (`http://host:port`), with basic auth when `auth` is set.
    pub fn new(base: &str, auth: Option<(String, String)>) -> RegistryClient {
        RegistryClient {
            base: base.trim_end_matches('/').to_owned(),
            auth,
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.auth {
            Some((user, password)) => builder.basic_auth(user, Some(password)),
            None => builder,
        }
    }

    async fn send(&self, what: &str, builder: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = builder.send().await.map_err(|source| HarnessError::Request {
            what: what.to_owned(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let url = response.url().to_string();
        let body = response.text().await.unwrap_or_default();
        Err(HarnessError::Http {
            url,
            what: what.to_owned(),
            status: status.as_u16(),
            body,
        })
    }

    /// True when `repo` already links the blob (`HEAD` 200), false on 404.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let what = format!("head of blob {digest} in {repo}");
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        match self.send(&what, self.request(reqwest::Method::HEAD, &url)).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads `bytes` as one blob of `repo` under `digest` (which the
    /// registry checks), with `POST /blobs/uploads/` then `PUT ?digest=`;
    /// skipped when the repository already has it, so images sharing base
    /// layers push quickly.
    pub async fn push_blob(&self, repo: &str, digest: &str, bytes: &[u8]) -> Result<()> {
        if self.blob_exists(repo, digest).await? {
            return Ok(());
        }
        let what = format!("upload of blob {digest} to {repo}");
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let response = self
            .send(&what, self.request(reqwest::Method::POST, &url))
            .await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| HarnessError::Image(format!("{what}: no Location header")))?;
        let mut put_url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_owned()
        };
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str("digest=");
        put_url.push_str(digest);
        let put = self
            .request(reqwest::Method::PUT, &put_url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec());
        self.send(&what, put).await?;
        Ok(())
    }

    /// Puts a manifest under `reference` (a tag or a digest) with its media
    /// type as `Content-Type`; returns the registry's `Docker-Content-Digest`.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let what = format!("put of manifest {repo}:{reference}");
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let put = self
            .request(reqwest::Method::PUT, &url)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec());
        let response = self.send(&what, put).await?;
        Ok(digest_header(&response).unwrap_or_else(|| crate::sha256_digest(bytes)))
    }

    /// Fetches a manifest by tag or digest, accepting every manifest media type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        let what = format!("get of manifest {repo}:{reference}");
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let get = self
            .request(reqwest::Method::GET, &url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        let response = self.send(&what, get).await?;
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let digest_header = digest_header(&response);
        let bytes = response
            .bytes()
            .await
            .map_err(|source| HarnessError::Request {
                what: what.clone(),
                source,
            })?
            .to_vec();
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest_header,
        })
    }

    /// Fetches a whole blob.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let what = format!("get of blob {digest} from {repo}");
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let response = self.send(&what, self.request(reqwest::Method::GET, &url)).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| HarnessError::Request { what, source })?;
        Ok(bytes.to_vec())
    }
}

fn digest_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl HarnessError {
    /// The HTTP status, when the error is a registry answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            HarnessError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_blob_gets_in_the_access_log() {
        let d = "/blobs/sha256:aa";
        let ok = r#"127.0.0.1 - - [28/Nov/2026:15:40:00 +0000] "GET /v2/a/b/blobs/sha256:aa HTTP/1.1" 200 12 "" "x""#;
        assert!(is_successful_get(ok, d));
        assert!(!is_successful_get(&ok.replace("GET", "HEAD"), d));
        assert!(!is_successful_get(&ok.replace("\" 200", "\" 401"), d));
        assert!(!is_successful_get(&ok.replace("sha256:aa", "sha256:aab"), d));
        assert!(!is_successful_get("garbage", d));
    }
}
