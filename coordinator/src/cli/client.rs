//! What every client subcommand (`submit`, `fleet`, `status`) shares: the
//! connection options, the channel (plain, TLS, mTLS), the bearer token as
//! gRPC metadata, deadlines, and one mapping from gRPC status codes to the
//! one-line reasons CI logs show.
//!
//! The token never appears in output: [`Secret`] prints as `<redacted>`,
//! clap hides `STRATA_TOKEN`'s value in `--help`, and no error message
//! quotes it.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use strata_proto::v1;
use strata_proto::v1::admin_service_client::AdminServiceClient;
use strata_proto::v1::fleet_service_client::FleetServiceClient;
use strata_proto::v1::scan_service_client::ScanServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Response, Status};

/// Bound on a token file.
const MAX_TOKEN_BYTES: u64 = 4096;
/// Bound on a PEM file (CA bundle, client certificate, key).
const MAX_PEM_BYTES: u64 = 1 << 20;
/// Bound on any one message the server sends (a report of a large image).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The metadata key the token rides in.
pub const AUTHORIZATION: &str = "authorization";

/// A value that must never be printed (the API token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// How to reach and authenticate to a coordinator (flattened into every
/// client subcommand).
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The coordinator's gRPC URL; `https://` means TLS.
    #[arg(
        long,
        env = "STRATA_SERVER",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL"
    )]
    pub server: String,
    /// API token, sent as `authorization: Bearer <token>`. Prefer --token-file
    /// (a flag is visible in the process list).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<Secret>,
    /// A file holding the API token (surrounding whitespace is trimmed).
    /// Takes precedence over --token / STRATA_TOKEN. (No environment
    /// variable: `STRATA_TOKEN_FILE` is the server's list of tokens.)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for the server (instead of the
    /// system roots). Implies TLS.
    #[arg(long, env = "STRATA_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A PEM client certificate, for servers that require one (mTLS). Needs --key.
    #[arg(long, env = "STRATA_CLIENT_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, env = "STRATA_CLIENT_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bound on connecting and on each call (waiting for a scan has its own bound).
    #[arg(long, env = "STRATA_TIMEOUT_SECS", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
}

/// The `authorization` header, or nothing. Cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

pub type AuthChannel = InterceptedService<Channel, Auth>;

/// An open connection to a coordinator, with the token and deadline every
/// call carries.
#[derive(Clone, Debug)]
pub struct Connection {
    channel: Channel,
    auth: Auth,
    /// The server as shown in messages.
    server: String,
    timeout: Duration,
    https: bool,
    client_cert: bool,
}

impl ConnectArgs {
    /// The token, from --token-file or else --token / STRATA_TOKEN.
    fn token(&self) -> anyhow::Result<Option<Secret>> {
        if let Some(path) = &self.token_file {
            return read_token_file(path).map(Some);
        }
        match &self.token {
            None => Ok(None),
            Some(t) => {
                let trimmed = t.expose().trim();
                if trimmed.is_empty() {
                    return Ok(None);
                }
                check_token(trimmed).context("--token / STRATA_TOKEN")?;
                Ok(Some(Secret(trimmed.to_owned())))
            }
        }
    }

    /// Connects (eagerly, so an unreachable server is reported here).
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let timeout = Duration::from_secs(self.timeout_secs);
        let token = self.token()?;
        let tls_wanted = self.ca.is_some() || self.cert.is_some();
        let uri = server_uri(&self.server, tls_wanted)?;
        let shown = uri.clone();
        let https = uri.starts_with("https://");
        if !https && token.is_some() && !is_loopback(&uri) {
            eprintln!("strata: warning: sending the token to {shown} over plain HTTP (use an https:// URL)");
        }
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("--server {shown}: not a valid URL"))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if https {
            let mut tls = ClientTlsConfig::new().timeout(timeout);
            tls = match &self.ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read_pem(ca, "--ca")?)),
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                let identity = Identity::from_pem(read_pem(cert, "--cert")?, read_pem(key, "--key")?);
                tls = tls.identity(identity);
            }
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("setting up TLS to {shown}"))?;
        }
        let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!("cannot reach the server at {shown}")));
            }
            Err(_) => anyhow::bail!(
                "cannot reach the server at {shown}: no connection within {}s",
                timeout.as_secs()
            ),
        };
        let header = match token {
            None => None,
            Some(t) => {
                let mut value = MetadataValue::try_from(format!("Bearer {}", t.expose()))
                    .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Connection {
            channel,
            auth: Auth { header },
            server: shown,
            timeout,
            https,
            client_cert: self.cert.is_some(),
        })
    }
}

impl Connection {
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn scan(&self) -> ScanServiceClient<AuthChannel> {
        ScanServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn fleet(&self) -> FleetServiceClient<AuthChannel> {
        FleetServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn admin(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// A request carrying the per-call deadline (`grpc-timeout`).
    pub fn request<T>(&self, message: T) -> Request<T> {
        self.request_within(message, self.timeout)
    }

    pub fn request_within<T>(&self, message: T, deadline: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(deadline);
        request
    }

    /// Runs one call under the per-call deadline, mapping a failure to a
    /// one-line reason.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(&status)),
            Err(_) => Err(self.deadline_error()),
        }
    }

    pub fn deadline_error(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "no answer from {} within {}s (DEADLINE_EXCEEDED; raise --timeout-secs)",
            self.server,
            self.timeout.as_secs()
        )
    }

    /// The one-line reason for a gRPC status.
    pub fn status_error(&self, status: &Status) -> anyhow::Error {
        let code = code_name(status.code());
        let message = one_line(status.message(), 500);
        // A status raised here, with a transport error underneath, rather
        // than one the server sent.
        if let Some(source) = status.source()
            && !matches!(status.code(), Code::DeadlineExceeded)
        {
            let mut causes = Vec::new();
            let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
            while let Some(e) = next {
                let text = one_line(&e.to_string(), 300);
                if !text.is_empty() && !message.contains(&text) && !causes.contains(&text) {
                    causes.push(text);
                }
                next = e.source();
            }
            let mut line = format!("the connection to {} failed ({code})", self.server);
            if !message.is_empty() {
                line.push_str(&format!(": {message}"));
            }
            for cause in causes {
                line.push_str(&format!(": {cause}"));
            }
            if let Some(hint) = self.connection_hint() {
                line.push_str(&format!(" ({hint})"));
            }
            return anyhow::anyhow!(line);
        }

        let what = match status.code() {
            Code::Unauthenticated if self.auth.header.is_some() => "the server refused the token".to_owned(),
            Code::Unauthenticated => {
                "the server wants a token (give --token-file FILE or STRATA_TOKEN)".to_owned()
            }
            // The reason (the token's or certificate's rights, the registry
            // policy's rule) follows.
            Code::PermissionDenied => "the server does not allow this".to_owned(),
            // The server could not reach what it needs (a registry, its store).
            Code::Unavailable => "the server could not complete the request".to_owned(),
            Code::DeadlineExceeded => format!("no answer from {} in time", self.server),
            Code::InvalidArgument => "the server rejected the request".to_owned(),
            // Its message says what was not found.
            Code::NotFound if !message.is_empty() => return anyhow::anyhow!("{message} ({code})"),
            Code::NotFound => "not found".to_owned(),
            Code::Unimplemented => format!("the server at {} does not offer this call", self.server),
            Code::ResourceExhausted => "the server is at capacity, retry later".to_owned(),
            Code::FailedPrecondition => "the server cannot do this now".to_owned(),
            _ => "the call failed".to_owned(),
        };
        if message.is_empty() {
            anyhow::anyhow!("{what} ({code})")
        } else {
            anyhow::anyhow!("{what} ({code}): {message}")
        }
    }

    /// What a broken connection most likely means, given how we connected.
    fn connection_hint(&self) -> Option<&'static str> {
        if !self.https {
            Some("if the server speaks TLS, use an https:// URL")
        } else if !self.client_cert {
            Some("if the server requires client certificates, give --cert and --key")
        } else {
            None
        }
    }
}

/// A server message on one line, at most `max` characters.
pub use strata_proto::text::one_line;

/// A scan status as the commands print it.
pub fn status_word(status: i32) -> &'static str {
    match v1::ScanStatus::try_from(status).unwrap_or(v1::ScanStatus::Unspecified) {
        v1::ScanStatus::Pending => "pending",
        v1::ScanStatus::Running => "running",
        v1::ScanStatus::Complete => "complete",
        v1::ScanStatus::Failed => "failed",
        v1::ScanStatus::Unspecified => "unknown",
    }
}

/// gRPC's own spelling of a code, as operators grep for it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The URI to dial, also the form shown in messages (it never holds user info).
/// `host:port` without a scheme is taken as `http://` (or `https://` when a
/// CA or client certificate is given: those imply TLS).
fn server_uri(server: &str, tls_wanted: bool) -> anyhow::Result<String> {
    let server = server.trim();
    anyhow::ensure!(!server.is_empty(), "--server is empty");
    anyhow::ensure!(server.len() <= 2048, "--server: over 2048 characters");
    let with_scheme = if server.contains("://") {
        server.to_owned()
    } else {
        format!("{}://{server}", if tls_wanted { "https" } else { "http" })
    };
    let mut url =
        url::Url::parse(&with_scheme).map_err(|e| anyhow::anyhow!("--server: not a valid URL: {e}"))?;
    let had_userinfo = !url.username().is_empty() || url.password().is_some();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let shown = url.as_str().trim_end_matches('/').to_owned();
    anyhow::ensure!(
        !had_userinfo,
        "--server {shown}: put credentials in --token-file, not in the URL"
    );
    anyhow::ensure!(url.host_str().is_some(), "--server {shown}: no host");
    match url.scheme() {
        "https" => {}
        "http" if tls_wanted => {
            url.set_scheme("https")
                .map_err(|_| anyhow::anyhow!("--server {shown}: cannot switch to https"))?;
        }
        "http" => {}
        other => anyhow::bail!("--server {shown}: scheme {other:?}: use http:// or https://"),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Only printable ASCII without spaces is a bearer token a header can carry.
fn check_token(token: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.bytes().all(|b| b.is_ascii_graphic()),
        "the token holds characters a header cannot carry (spaces, control or non-ASCII characters)"
    );
    Ok(())
}

/// At most `max` bytes of `path`, whatever it is (a pipe or a device has no
/// size to check first): the read stops one byte past the cap.
pub(super) fn read_bounded(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{what} {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "{what} {}: over the {max}-byte limit",
        path.display()
    );
    Ok(bytes)
}

fn read_token_file(path: &Path) -> anyhow::Result<Secret> {
    let bytes = read_bounded(path, MAX_TOKEN_BYTES, "--token-file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("--token-file {}: not UTF-8 text", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "--token-file {}: the file is empty",
        path.display()
    );
    check_token(token).with_context(|| format!("--token-file {}", path.display()))?;
    Ok(Secret(token.to_owned()))
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = read_bounded(path, MAX_PEM_BYTES, what)?;
    anyhow::ensure!(
        bytes.windows(11).any(|w| w == b"-----BEGIN "),
        "{what} {}: not a PEM file",
        path.display()
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?}"), "<redacted>");
        let auth = Auth {
            header: Some(MetadataValue::try_from("Bearer hunter2").unwrap()),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            server_uri("127.0.0.1:7700", false).unwrap(),
            "http://127.0.0.1:7700"
        );
        assert_eq!(
            server_uri("127.0.0.1:7700", true).unwrap(),
            "https://127.0.0.1:7700"
        );
        assert_eq!(server_uri("http://h:1", true).unwrap(), "https://h:1");
        assert_eq!(server_uri("https://h:1/", false).unwrap(), "https://h:1");
        let err = server_uri("https://u:secret@h:1", false).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(server_uri("ftp://h", false).is_err());
        assert!(is_loopback("http://127.0.0.1:1") && is_loopback("http://localhost:1"));
        assert!(!is_loopback("http://example.com:1"));
    }

    #[test]
    fn token_files_are_trimmed_bounded_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  abc.def-123\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap().expose(), "abc.def-123");
        std::fs::write(&p, " \n").unwrap();
        assert!(read_token_file(&p).is_err());
        std::fs::write(&p, "a b").unwrap();
        let err = format!("{:#}", read_token_file(&p).unwrap_err());
        assert!(!err.contains("a b"), "{err}");
        std::fs::write(&p, vec![b'a'; 5000]).unwrap();
        assert!(read_token_file(&p).is_err());
    }
}
