//! What every client subcommand (`submit`, `fleet`, `status`) shares: the
//! connection options, the channel (plain, TLS, mTLS), the bearer token as
//! gRPC metadata, deadlines, and one mapping from gRPC status codes to the
//! one-line reasons CI logs show.
//!
//! `--server` may name several coordinators (comma-separated, or the flag
//! repeated): [`ConnectArgs::connect`] tries them in order, and a command
//! whose stream breaks resumes on the next one ([`ConnectArgs::resume`],
//! round-robin), as `submit --wait` and `fleet watch` do.
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
use tokio::time::Instant;

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
/// Bound on how many servers `--server` may list.
const MAX_SERVERS: usize = 32;
/// Bound on resuming a broken stream without any new event (unless the
/// command's own timeout is longer).
pub const RESUME_LIMIT: Duration = Duration::from_secs(120);
/// The first pause between passes over the servers while resuming
/// (doubling up to [`RESUME_PAUSE_MAX`]).
const RESUME_PAUSE_FIRST: Duration = Duration::from_millis(250);
const RESUME_PAUSE_MAX: Duration = Duration::from_secs(2);

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
    /// The coordinator's gRPC URL; `https://` means TLS. Several
    /// coordinators of one cluster: comma-separated, or the flag repeated.
    /// Connecting tries them in order; a `submit --wait` or `fleet watch`
    /// whose connection breaks resumes on the next one.
    #[arg(
        long,
        env = "STRATA_SERVER",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
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
    /// Its place in the `--server` list.
    index: usize,
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

    /// The `--server` list as URIs to dial, in order, duplicates dropped.
    pub fn servers(&self) -> anyhow::Result<Vec<String>> {
        let tls_wanted = self.ca.is_some() || self.cert.is_some();
        server_list(&self.server, tls_wanted)
    }

    /// Connects (eagerly, so an unreachable server is reported here) to the
    /// first server of the list that answers, trying them in order.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let servers = self.servers()?;
        self.connect_pass(&servers, 0).await
    }

    /// One pass over the servers after `lost`'s (round-robin, ending with
    /// `lost`'s own): the first that connects.
    pub async fn reconnect(&self, lost: &Connection) -> anyhow::Result<Connection> {
        let servers = self.servers()?;
        self.connect_pass(&servers, lost.index + 1).await
    }

    /// [`reconnect`](Self::reconnect) again and again, pausing between
    /// passes, until one connects or `until` passes (then the last error).
    /// Each success is told through `note` as `connection to X lost;
    /// resuming on Y`.
    pub async fn resume(
        &self,
        lost: &Connection,
        until: Instant,
        note: impl Fn(&str),
    ) -> anyhow::Result<Connection> {
        let mut pause = RESUME_PAUSE_FIRST;
        loop {
            match self.reconnect(lost).await {
                Ok(conn) => {
                    note(&format!(
                        "connection to {} lost; resuming on {}",
                        lost.server, conn.server
                    ));
                    return Ok(conn);
                }
                Err(e) if Instant::now() + pause >= until => return Err(e),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RESUME_PAUSE_MAX);
                }
            }
        }
    }

    /// Tries each server once, from `start` (modulo the count) round.
    /// One server: its error as it is; several: every server's reason.
    async fn connect_pass(&self, servers: &[String], start: usize) -> anyhow::Result<Connection> {
        let count = servers.len();
        let mut failures = Vec::new();
        for k in 0..count {
            let index = (start + k) % count;
            match self.connect_to(index, &servers[index]).await {
                Ok(conn) => return Ok(conn),
                Err(e) if count == 1 => return Err(e),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        anyhow::bail!("cannot reach any of the {count} servers: {}", failures.join("; "))
    }

    /// Connects to the one server `uri` (`index` in the list).
    async fn connect_to(&self, index: usize, uri: &str) -> anyhow::Result<Connection> {
        let timeout = Duration::from_secs(self.timeout_secs);
        let token = self.token()?;
        let uri = uri.to_owned();
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
            index,
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

    /// The server this connection went to, as messages show it.
    pub fn server(&self) -> &str {
        &self.server
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

/// Answers that no retry or other server changes (the caller's fault, or a
/// call the server does not have): a command ends with the error.
pub fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
            | Code::OutOfRange
    )
}

/// A status this side raised because the connection broke (a transport
/// error underneath), rather than one the server sent.
pub fn is_transport(status: &Status) -> bool {
    status.source().is_some()
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

/// The `--server` values (each may itself hold a comma-separated list, as
/// `STRATA_SERVER` does) as URIs to dial, in order, without duplicates
/// or empty items.
fn server_list(values: &[String], tls_wanted: bool) -> anyhow::Result<Vec<String>> {
    let mut servers: Vec<String> = Vec::new();
    for item in values.iter().flat_map(|v| v.split(',')) {
        if item.trim().is_empty() {
            continue;
        }
        let uri = server_uri(item, tls_wanted)?;
        if !servers.contains(&uri) {
            servers.push(uri);
        }
    }
    anyhow::ensure!(!servers.is_empty(), "--server is empty");
    anyhow::ensure!(
        servers.len() <= MAX_SERVERS,
        "--server: over {MAX_SERVERS} servers"
    );
    Ok(servers)
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
    fn server_lists() {
        let list = |v: &[&str]| server_list(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), false);
        assert_eq!(list(&["127.0.0.1:1"]).unwrap(), ["http://127.0.0.1:1"]);
        assert_eq!(
            list(&["a:1, https://b:2/", "c:3"]).unwrap(),
            ["http://a:1", "https://b:2", "http://c:3"]
        );
        // Duplicates (after normalising) and empty items are dropped.
        assert_eq!(
            list(&["a:1,", "http://a:1/", ",b:2"]).unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(
            server_list(&["a:1,b:2".to_owned()], true).unwrap(),
            ["https://a:1", "https://b:2"]
        );
        assert!(
            list(&[" , "])
                .unwrap_err()
                .to_string()
                .contains("--server is empty")
        );
        assert!(list(&["a:1,ftp://b"]).is_err());
        let many: Vec<String> = (0..40).map(|i| format!("h:{}", i + 1)).collect();
        assert!(server_list(&many, false).is_err());
        let err = list(&["a:1,https://u:secret@b:2"]).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn server_flags_parse_comma_separated_and_repeated() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            connect: ConnectArgs,
        }
        let cli = Cli::try_parse_from(["x", "--server", "a:1,b:2", "--server", "c:3"]).unwrap();
        assert_eq!(cli.connect.server, ["a:1", "b:2", "c:3"]);
        assert_eq!(
            cli.connect.servers().unwrap(),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        // The default when no flag or STRATA_SERVER is given is one server
        // (the test runner's environment may carry STRATA_SERVER: only
        // checked when it does not).
        if std::env::var_os("STRATA_SERVER").is_none() {
            let cli = Cli::try_parse_from(["x"]).unwrap();
            assert_eq!(cli.connect.servers().unwrap(), ["http://127.0.0.1:7700"]);
        }
    }

    #[tokio::test]
    async fn connecting_tries_the_servers_in_order_and_reconnects_round_robin() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            connect: ConnectArgs,
        }
        // Two closed loopback ports and one that accepts (an HTTP/2
        // handshake is not needed for `connect`: TCP is).
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (dead1, dead2) = (closed(), closed());
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_port = live.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = live.accept().await {
                held.push(conn);
            }
        });
        let servers = format!("127.0.0.1:{dead1},127.0.0.1:{live_port},127.0.0.1:{dead2}");
        let cli = Cli::try_parse_from(["x", "--server", &servers, "--timeout-secs", "5"]).unwrap();
        let conn = cli.connect.connect().await.unwrap();
        assert_eq!(conn.server(), format!("http://127.0.0.1:{live_port}"));
        assert_eq!(conn.index, 1);
        // The next pass starts after it, tries the dead one, and comes round.
        let again = cli.connect.reconnect(&conn).await.unwrap();
        assert_eq!(again.index, 1);
        // None reachable: every reason, each server named.
        let dead = format!("127.0.0.1:{dead1},127.0.0.1:{dead2}");
        let cli = Cli::try_parse_from(["x", "--server", &dead, "--timeout-secs", "5"]).unwrap();
        let err = format!("{:#}", cli.connect.connect().await.unwrap_err());
        assert!(err.starts_with("cannot reach any of the 2 servers: "), "{err}");
        assert!(
            err.contains(&format!("127.0.0.1:{dead1}")) && err.contains(&format!("127.0.0.1:{dead2}")),
            "{err}"
        );
        // One server: its message as before.
        let one = format!("127.0.0.1:{dead1}");
        let cli = Cli::try_parse_from(["x", "--server", &one, "--timeout-secs", "5"]).unwrap();
        let err = format!("{:#}", cli.connect.connect().await.unwrap_err());
        assert!(
            err.starts_with(&format!("cannot reach the server at http://127.0.0.1:{dead1}")),
            "{err}"
        );
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
