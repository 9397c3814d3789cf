//! Registry credentials from the Docker config file.
//!
//! Reads `auths` entries: `auth` (base64 `user:password`) or `username` +
//! `password`. Keys are matched by host (`https://index.docker.io/v1/`,
//! `docker.io` and `registry-1.docker.io` all name Docker Hub).
//!
//! Not supported, and skipped with a debug log (the registry is then tried
//! anonymously): `credsStore` / `credHelpers` (external helper programs) and
//! `identitytoken` (OAuth refresh tokens).
//!
//! Returns `None`, not an error, when the file does not exist or has no entry
//! for the registry; an unreadable, oversized or malformed file is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::SourceError;

/// Largest config file read.
const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A username and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The config file to read: `explicit`, else `$DOCKER_CONFIG/config.json`,
/// else `$HOME/.docker/config.json`.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The credentials for `registry` (`host[:port]` as in the reference) in the file at `path`.
pub async fn lookup(path: &Path, registry: &str) -> Result<Option<Credentials>, SourceError> {
    let context = || format!("docker config {}", path.display());
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SourceError::io(context(), e)),
    };
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(SourceError::format(
            context(),
            format!("larger than {MAX_CONFIG_FILE_BYTES} bytes"),
        ));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| SourceError::io(context(), e))?;
    parse_and_find(&bytes, registry).map_err(|reason| SourceError::format(context(), reason))
}

pub(crate) fn parse_and_find(bytes: &[u8], registry: &str) -> Result<Option<Credentials>, String> {
    let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let wanted = normalize_host(registry);
    let Some((key, entry)) = file.auths.iter().find(|(k, _)| normalize_host(k) == wanted) else {
        if file.creds_store.is_some() || file.cred_helpers.contains_key(registry) {
            tracing::debug!(
                registry,
                "docker credential helpers are not supported; trying anonymously"
            );
        }
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password)
        && !username.is_empty()
    {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auths.{key}.auth: invalid base64: {e}"))?;
        let text = String::from_utf8(decoded).map_err(|_| format!("auths.{key}.auth: not UTF-8"))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| format!("auths.{key}.auth: expected base64 of user:password"))?;
        return Ok(Some(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    if entry.identitytoken.is_some() {
        tracing::debug!(
            registry,
            "docker config identity tokens are not supported; trying anonymously"
        );
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `localhost:5000` unchanged.
fn normalize_host(key: &str) -> String {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = no_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        "docker.io".to_owned()
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
        "auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "localhost:5000": {"username": "u", "password": "p:w"},
            "ghcr.io": {"identitytoken": "tok"},
            "bad.example": {"auth": "!!!"}
        },
        "credsStore": "desktop"
    }"#;

    fn find(registry: &str) -> Result<Option<(String, String)>, String> {
        parse_and_find(FILE.as_bytes(), registry).map(|c| c.map(|c| (c.username, c.password)))
    }

    #[test]
    fn finds_entries_by_host() {
        let hub = Some(("hub".to_owned(), "secret".to_owned()));
        assert_eq!(find("docker.io"), Ok(hub.clone()));
        assert_eq!(find("index.docker.io"), Ok(hub));
        assert_eq!(
            find("localhost:5000"),
            Ok(Some(("u".to_owned(), "p:w".to_owned())))
        );
        assert_eq!(find("localhost:5001"), Ok(None));
        assert_eq!(find("ghcr.io"), Ok(None));
        assert!(find("bad.example").is_err());
        assert!(parse_and_find(b"not json", "x").is_err());
        assert_eq!(parse_and_find(b"{}", "x"), Ok(None));
    }

    #[test]
    fn debug_hides_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn missing_file_is_anonymous() {
        let r = lookup(Path::new("/nonexistent/strata/config.json"), "x").await;
        assert!(matches!(r, Ok(None)));
    }
}
