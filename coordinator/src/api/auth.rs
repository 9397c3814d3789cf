//! Securing the gRPC server: TLS (server certificate from files), optional
//! client certificates (mTLS) and bearer tokens.
//!
//! # The client contract
//! - TLS: when the server has `--tls-cert`/`--tls-key`, clients speak TLS
//!   and verify that certificate against a CA they trust.
//! - mTLS: with `--client-ca`, the TLS handshake requires a client
//!   certificate signed by that CA; a client without one cannot connect.
//!   The certificate's common name (else its first subject alternative name)
//!   names the caller in audit logs.
//! - Tokens: with `--token-file`, every call to `strata.v1.ScanService`,
//!   `FleetService` and `AdminService` carries the gRPC metadata
//!   `authorization: Bearer <token>`. No such header (or another scheme):
//!   `UNAUTHENTICATED` "missing bearer token"; a token not in the file:
//!   `UNAUTHENTICATED` "invalid token". The token's name from the file names
//!   the caller. `grpc.health.v1.Health` and server reflection stay open so
//!   probes and `grpcurl` discovery work without one.
//!
//! Everything is read once, at start; nothing is reloaded. Tokens are kept
//! only as SHA-256 digests, compared in constant time, never logged, and
//! removed from the request before a handler sees it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strata_proto::text::error_chain;

use sha2::Digest as _;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// Bound on a PEM file (certificate, key, CA bundle) and on the token file.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Bound on the entries of a token file.
const MAX_TOKENS: usize = 10_000;
/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token and name accepted (they travel in an HTTP/2 header).
const MAX_TOKEN_LEN: usize = 4096;
const MAX_NAME_LEN: usize = 128;
/// Bound on a TLS handshake, so a silent client cannot hold a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The metadata key clients put their token under (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// Errors loading the security settings. Messages name the file, never a
/// token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    #[error("{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Settings(String),
    #[error("refusing to serve plain gRPC on {0}: configure --tls-cert/--tls-key or pass --allow-remote")]
    PlainRemote(SocketAddr),
}

/// The files the security settings come from; every one is optional.
#[derive(Debug, Clone, Default)]
pub struct SecurityFiles {
    /// PEM server certificate (chain), with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) client certificates must be signed by (mTLS).
    pub client_ca: Option<PathBuf>,
    /// `NAME TOKEN` per line.
    pub token_file: Option<PathBuf>,
}

/// How the server is secured. The default is plain, unauthenticated gRPC,
/// which the roles only allow on loopback.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<Tls>,
    tokens: Option<Arc<Tokens>>,
}

#[derive(Clone)]
struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
}

/// Never shows key material or tokens.
impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.is_tls())
            .field("client_certificates", &self.requires_client_certs())
            .field("tokens", &self.tokens.as_ref().map_or(0, |t| t.entries.len()))
            .finish()
    }
}

impl Security {
    /// Reads and checks every configured file. TLS needs both the
    /// certificate and the key; a client CA needs TLS.
    pub fn load(files: &SecurityFiles) -> Result<Security, SecurityError> {
        let tls = match (&files.tls_cert, &files.tls_key) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(SecurityError::Settings(
                    "--tls-cert and --tls-key go together: give both".into(),
                ));
            }
            (Some(cert), Some(key)) => Some(load_tls(cert, key, files.client_ca.as_deref())?),
        };
        if tls.is_none() && files.client_ca.is_some() {
            return Err(SecurityError::Settings(
                "--client-ca needs TLS: give --tls-cert and --tls-key too".into(),
            ));
        }
        let tokens = match &files.token_file {
            None => None,
            Some(path) => {
                let text = read_bounded("token file", path)?;
                let text = String::from_utf8(text).map_err(|_| SecurityError::Invalid {
                    what: "token file",
                    path: path.clone(),
                    reason: "not UTF-8 text".into(),
                })?;
                let tokens = Tokens::parse(&text).map_err(|reason| SecurityError::Invalid {
                    what: "token file",
                    path: path.clone(),
                    reason,
                })?;
                Some(Arc::new(tokens))
            }
        };
        Ok(Security { tls, tokens })
    }

    /// Whether the server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn requires_client_certs(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some())
    }

    /// How many tokens the token file gave (0 without one).
    pub fn token_count(&self) -> usize {
        self.tokens.as_ref().map_or(0, |t| t.entries.len())
    }

    /// Plain gRPC only on loopback, unless `allow_remote` says otherwise.
    pub fn check_listen(&self, addr: SocketAddr, allow_remote: bool) -> Result<(), SecurityError> {
        if self.tls.is_none() && !allow_remote && !addr.ip().is_loopback() {
            return Err(SecurityError::PlainRemote(addr));
        }
        Ok(())
    }

    /// tonic's TLS settings, `None` for plain gRPC.
    pub(crate) fn server_tls_config(&self) -> Option<ServerTlsConfig> {
        let tls = self.tls.as_ref()?;
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &tls.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        Some(config)
    }

    /// The interceptor every Strata service runs behind.
    pub(crate) fn interceptor(&self) -> Auth {
        Auth {
            tokens: self.tokens.clone(),
            client_certs: self.requires_client_certs(),
        }
    }
}

/// Installs aws-lc-rs as rustls's process-wide crypto provider (both ring and
/// aws-lc-rs are compiled in, so rustls cannot choose alone). Idempotent;
/// clients in tests call it too.
pub fn install_crypto_provider() {
    // An error means a provider is already installed: fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn read_bounded(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    use std::io::Read as _;
    let read_err = |source| SecurityError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SecurityError::Invalid {
            what,
            path: path.to_owned(),
            reason: format!("over the {MAX_FILE_BYTES}-byte limit"),
        });
    }
    Ok(bytes)
}

fn load_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Tls, SecurityError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    install_crypto_provider();
    let invalid = |what, path: &Path, reason: String| SecurityError::Invalid {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_pem = read_bounded("TLS certificate", cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("TLS certificate", cert, format!("not PEM certificates: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(invalid(
            "TLS certificate",
            cert,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    };
    warn_if_not_valid_now(cert, leaf);
    let key_pem = read_bounded("TLS key", key)?;
    PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid("TLS key", key, format!("no PEM private key in it: {e}")))?;
    let client_ca_pem = match client_ca {
        None => None,
        Some(path) => {
            let pem = read_bounded("client CA", path)?;
            let cas = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("client CA", path, format!("not PEM certificates: {e}")))?;
            if cas.is_empty() {
                return Err(invalid("client CA", path, "no PEM certificate in it".into()));
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(cas);
            if added == 0 {
                return Err(invalid(
                    "client CA",
                    path,
                    "no usable CA certificate in it".into(),
                ));
            }
            Some(pem)
        }
    };
    let tls = Tls {
        cert_pem,
        key_pem,
        client_ca_pem,
    };
    // Build the server config once now, so a key that does not match the
    // certificate is an error at start rather than when the server spawns.
    let config = Security {
        tls: Some(tls.clone()),
        tokens: None,
    }
    .server_tls_config()
    .unwrap_or_default();
    tonic::transport::Server::builder()
        .tls_config(config)
        .map_err(|e| {
            SecurityError::Settings(format!(
                "TLS settings (--tls-cert {}, --tls-key {}): {}",
                cert.display(),
                key.display(),
                error_chain(&e)
            ))
        })?;
    Ok(tls)
}

/// An expired (or not yet valid) server certificate still starts the server
/// (clients will refuse it), but says so loudly.
fn warn_if_not_valid_now(path: &Path, der: &[u8]) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return;
    };
    let validity = cert.validity();
    if !validity.is_valid() {
        tracing::warn!(
            certificate = %path.display(),
            not_before = %validity.not_before,
            not_after = %validity.not_after,
            "the TLS certificate is not valid now: clients will refuse it"
        );
    }
}

/// The caller's name from a client certificate: its common name, else its
/// first DNS, email or URI subject alternative name.
fn cert_name(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_owned));
    let name = cn.or_else(|| {
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some((*s).to_owned())
            }
            _ => None,
        })
    })?;
    // It goes into logs: printable, bounded.
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_NAME_LEN)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// The token file, as SHA-256 digests of the tokens.
struct Tokens {
    entries: Vec<(Arc<str>, [u8; 32])>,
}

fn digest(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// One `NAME TOKEN` per line; `#` comments and blank lines skipped.
    /// Errors name the line, never its token.
    fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<(Arc<str>, [u8; 32])> = Vec::new();
        let mut names = std::collections::HashMap::<String, usize>::new();
        let mut digests = std::collections::HashMap::<[u8; 32], usize>::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!("line {n}: expected NAME TOKEN"));
            };
            if name.len() > MAX_NAME_LEN || !name.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "line {n}: a name is printable ASCII of at most {MAX_NAME_LEN} characters"
                ));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {n} ({name}): the token is shorter than {MIN_TOKEN_LEN} characters"
                ));
            }
            if token.len() > MAX_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "line {n} ({name}): a token is printable ASCII of at most {MAX_TOKEN_LEN} characters"
                ));
            }
            if let Some(first) = names.insert(name.to_owned(), n) {
                return Err(format!("line {n}: the name {name} is on line {first} already"));
            }
            let d = digest(token);
            if let Some(first) = digests.insert(d, n) {
                return Err(format!(
                    "line {n} ({name}): the same token as line {first}; give each name its own"
                ));
            }
            if entries.len() == MAX_TOKENS {
                return Err(format!("more than {MAX_TOKENS} tokens"));
            }
            entries.push((Arc::from(name), d));
        }
        if entries.is_empty() {
            return Err("no tokens in it (one `NAME TOKEN` per line)".into());
        }
        Ok(Tokens { entries })
    }

    /// The name of `token`, comparing against every entry in constant time.
    fn verify(&self, token: &str) -> Option<Arc<str>> {
        let presented = digest(token);
        let mut found = None;
        for (name, d) in &self.entries {
            let diff = d
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(Arc::clone(name));
            }
        }
        found
    }
}

/// Who a token or client certificate says the caller is, in the request's
/// extensions for [`super::caller`].
#[derive(Clone, Debug)]
pub(crate) struct CallerName(pub(crate) Arc<str>);

/// Checks bearer tokens and names the caller; runs before every Strata
/// service call.
#[derive(Clone)]
pub(crate) struct Auth {
    tokens: Option<Arc<Tokens>>,
    client_certs: bool,
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        let mut name: Option<Arc<str>> = None;
        if let Some(tokens) = &self.tokens {
            let presented = request
                .metadata()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            let Some(token) = presented else {
                tracing::warn!(peer = %peer, "call without a bearer token refused");
                return Err(Status::unauthenticated("missing bearer token"));
            };
            let Some(found) = tokens.verify(token) else {
                tracing::warn!(peer = %peer, "call with an invalid token refused");
                return Err(Status::unauthenticated("invalid token"));
            };
            name = Some(found);
        }
        // Handlers never see the credential (so nothing can log it).
        request.metadata_mut().remove(AUTHORIZATION);
        if name.is_none() && self.client_certs {
            name = request
                .peer_certs()
                .and_then(|certs| certs.first().and_then(|c| cert_name(c)))
                .map(Arc::from);
        }
        if let Some(name) = name {
            request.extensions_mut().insert(CallerName(name));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-alpha";
    const B: &str = "0123456789abcdef-bravo";

    #[test]
    fn token_file_parses_and_verifies() {
        let text = format!("# CI\n\nci-bot {A}\n  ops   {B}  \n");
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.entries.len(), 2);
        assert_eq!(tokens.verify(A).as_deref(), Some("ci-bot"));
        assert_eq!(tokens.verify(B).as_deref(), Some("ops"));
        assert!(tokens.verify("0123456789abcdef-charlie").is_none());
        assert!(tokens.verify("").is_none());
    }

    #[test]
    fn bad_token_files_are_clear_and_never_show_the_token() {
        let cases = [
            (format!("a {A}\na {B}\n"), "name a is on line 1"),
            (format!("a {A}\nb {A}\n"), "same token as line 1"),
            ("a tiny\n".to_owned(), "shorter than 16"),
            (format!("a {A} extra\n"), "expected NAME TOKEN"),
            ("lonely\n".to_owned(), "expected NAME TOKEN"),
            ("# nothing\n".to_owned(), "no tokens"),
        ];
        for (text, want) in cases {
            let err = Tokens::parse(&text).err().unwrap();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains(A) && !err.contains("tiny"), "{err}");
        }
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn plain_grpc_only_on_loopback() {
        let plain = Security::default();
        assert!(
            plain
                .check_listen("127.0.0.1:7700".parse().unwrap(), false)
                .is_ok()
        );
        assert!(plain.check_listen("[::1]:7700".parse().unwrap(), false).is_ok());
        let err = plain
            .check_listen("0.0.0.0:7700".parse().unwrap(), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to serve plain gRPC on 0.0.0.0:7700: configure --tls-cert/--tls-key or pass --allow-remote"
        );
        assert!(plain.check_listen("0.0.0.0:7700".parse().unwrap(), true).is_ok());
    }

    #[test]
    fn tls_settings_go_together() {
        let files = SecurityFiles {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            ..SecurityFiles::default()
        };
        assert!(
            Security::load(&files)
                .unwrap_err()
                .to_string()
                .contains("go together")
        );
        let files = SecurityFiles {
            client_ca: Some("/nonexistent/ca.pem".into()),
            ..SecurityFiles::default()
        };
        assert!(
            Security::load(&files)
                .unwrap_err()
                .to_string()
                .contains("needs TLS")
        );
        let files = SecurityFiles {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some("/nonexistent/key.pem".into()),
            ..SecurityFiles::default()
        };
        let err = Security::load(&files).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
