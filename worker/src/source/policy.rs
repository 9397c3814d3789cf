//! The registry policy: where a caller may make the server connect.
//!
//! Whoever may call `SubmitImage` (or register images) names the registry
//! the coordinator and the workers then connect to. Without a policy that
//! is server-side request forgery: a reference to `169.254.169.254`, to an
//! internal service's host and port, or to a name that resolves to one.
//! The policy is checked at three points, so that no path around it
//! exists:
//!
//! - **the registry a reference names** ([`RegistryPolicy::check_registry`],
//!   before any connection): `denied_registries` globs, then
//!   `allowed_registries` globs (when any are set), then plain HTTP (a
//!   caller may ask for it only for a registry the server lists in
//!   `insecure_registries`), then an IP literal's address;
//! - **every address a name resolves to**, when a connection is made
//!   ([`PolicyResolver`], reqwest's DNS hook): loopback, private,
//!   link-local and the other special ranges are refused unless
//!   `allowed_networks` holds them or the host is named exactly (no glob)
//!   in `allowed_registries` or `insecure_registries`. Checking at connect
//!   time, not once beforehand, also defeats DNS rebinding;
//! - **every redirect and token service** a registry sends us to
//!   ([`RegistryPolicy::check_url`]): denied globs, plain HTTP only to a
//!   listed registry, IP literals' addresses (names go through the
//!   resolver). The allow list is not applied here: it says which
//!   registries a caller may name, and those registries legitimately send
//!   blob downloads to CDNs and tokens from services with other names.
//!
//! `strata scan` and `strata sbom` run as their user, who is the caller:
//! they use [`RegistryPolicy::open`]. The server roles build theirs from
//! their settings, and the default is the strict one.
//!
//! Behind an HTTP proxy (`HTTPS_PROXY`), names are resolved by the proxy,
//! not here: the address rules then belong to the proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use ipnet::IpNet;

/// Redirects followed for one request, as reqwest's default policy.
const MAX_REDIRECTS: usize = 10;

/// A reference or connection the policy refused. `rule` is the setting
/// that decided (`denied_registries`, `allowed_registries`,
/// `insecure_registries`, `allowed_networks`, `redirects`), named in the
/// message so an operator knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (registry policy: {rule})")]
pub struct PolicyError {
    pub rule: &'static str,
    pub message: String,
}

/// The settings a policy is built from (flags and config keys of the
/// server roles; see `strata coordinator --help`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySettings {
    /// Globs over `host[:port]` (a pattern without a port matches every
    /// port); empty: every registry not denied.
    pub allowed_registries: Vec<String>,
    /// Globs over `host[:port]`; a match is refused even when allowed.
    pub denied_registries: Vec<String>,
    /// CIDR blocks (`10.0.0.0/8`, `fd00::/8`) registries may resolve into
    /// although they are private, loopback or link-local.
    pub allowed_networks: Vec<String>,
}

/// A setting that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum PolicySettingsError {
    #[error("{key}: pattern {pattern:?}: {reason}")]
    Pattern {
        key: &'static str,
        pattern: String,
        reason: String,
    },
    #[error("allowed_networks: {value:?} is not a CIDR block (e.g. 10.0.0.0/8): {reason}")]
    Network { value: String, reason: String },
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct RegistryPolicy(Arc<Inner>);

struct Inner {
    /// No checks at all (the local CLI).
    open: bool,
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    networks: Vec<IpNet>,
    /// Hosts (and ports, when given) named exactly in
    /// `allowed_registries`: they may be at private addresses (the operator
    /// named them).
    named: Vec<(String, Option<String>)>,
}

/// One glob, with whether it names a port.
struct Pattern {
    text: String,
    with_port: bool,
    matcher: GlobMatcher,
}

impl Default for RegistryPolicy {
    /// Strict: every public registry, no private addresses, plain HTTP
    /// only to the listed registries.
    fn default() -> Self {
        RegistryPolicy(Arc::new(Inner {
            open: false,
            allow: Vec::new(),
            deny: Vec::new(),
            networks: Vec::new(),
            named: Vec::new(),
        }))
    }
}

impl std::fmt::Debug for RegistryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts = |p: &[Pattern]| p.iter().map(|p| p.text.clone()).collect::<Vec<_>>();
        f.debug_struct("RegistryPolicy")
            .field("open", &self.0.open)
            .field("allow", &texts(&self.0.allow))
            .field("deny", &texts(&self.0.deny))
            .field("networks", &self.0.networks)
            .finish()
    }
}

impl RegistryPolicy {
    /// No checks: for a process whose user is its only caller.
    pub fn open() -> Self {
        RegistryPolicy(Arc::new(Inner {
            open: true,
            allow: Vec::new(),
            deny: Vec::new(),
            networks: Vec::new(),
            named: Vec::new(),
        }))
    }

    pub fn new(settings: &PolicySettings) -> Result<Self, PolicySettingsError> {
        let allow = patterns("allowed_registries", &settings.allowed_registries)?;
        let deny = patterns("denied_registries", &settings.denied_registries)?;
        let networks = settings
            .allowed_networks
            .iter()
            .map(|n| {
                n.trim()
                    .parse::<IpNet>()
                    .map_err(|e| PolicySettingsError::Network {
                        value: n.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let named = settings
            .allowed_registries
            .iter()
            .filter(|p| !p.contains(['*', '?', '[', '{']))
            .map(|p| {
                let (host, port) = split_host_port(p.trim());
                (host, port.map(str::to_owned))
            })
            .collect();
        Ok(RegistryPolicy(Arc::new(Inner {
            open: false,
            allow,
            deny,
            networks,
            named,
        })))
    }

    pub fn is_open(&self) -> bool {
        self.0.open
    }

    /// Checks a registry a reference names, before anything connects to
    /// it. `registry` is `host[:port]` as written (`docker.io`),
    /// `resolved` the host connected to (`index.docker.io`), `insecure`
    /// the server's `insecure_registries`, `plain_http` whether the caller
    /// asked for plain HTTP.
    pub fn check_registry(
        &self,
        registry: &str,
        resolved: &str,
        insecure: &[String],
        plain_http: bool,
    ) -> Result<(), PolicyError> {
        if self.0.open {
            return Ok(());
        }
        let names = [registry, resolved];
        if let Some(p) = names.iter().find_map(|n| self.denied(n)) {
            return Err(PolicyError {
                rule: "denied_registries",
                message: format!("registry {registry:?} matches the denied pattern {:?}", p.text),
            });
        }
        if !self.0.allow.is_empty() && !names.iter().any(|n| self.0.allow.iter().any(|p| p.matches(n))) {
            let allowed: Vec<&str> = self.0.allow.iter().map(|p| p.text.as_str()).collect();
            return Err(PolicyError {
                rule: "allowed_registries",
                message: format!(
                    "registry {registry:?} is not one of the allowed registries ({})",
                    allowed.join(", ")
                ),
            });
        }
        if plain_http && !listed(insecure, registry) && !listed(insecure, resolved) {
            return Err(plain_http_refused(registry));
        }
        let (host, port) = split_host_port(resolved);
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_address(&host, port, ip, insecure)?;
        }
        Ok(())
    }

    /// Checks a URL a registry sent us to (a redirect, a token service).
    pub fn check_url(&self, url: &url::Url, insecure: &[String]) -> Result<(), PolicyError> {
        if self.0.open {
            return Ok(());
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string().to_ascii_lowercase(),
            None => {
                return Err(PolicyError {
                    rule: "redirects",
                    message: format!("{:?} names no host", url.as_str()),
                });
            }
        };
        let with_port = match url.port() {
            Some(p) if host.contains(':') => format!("[{host}]:{p}"),
            Some(p) => format!("{host}:{p}"),
            None if host.contains(':') => format!("[{host}]"),
            None => host.clone(),
        };
        if let Some(p) = self.denied(&with_port) {
            return Err(PolicyError {
                rule: "denied_registries",
                message: format!("{:?} matches the denied pattern {:?}", url.as_str(), p.text),
            });
        }
        match url.scheme() {
            "https" => {}
            "http" if listed(insecure, &with_port) => {}
            "http" => return Err(plain_http_refused(&with_port)),
            other => {
                return Err(PolicyError {
                    rule: "redirects",
                    message: format!("{:?}: scheme {other:?} is not HTTP(S)", url.as_str()),
                });
            }
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            let port = url.port().map(|p| p.to_string());
            self.check_address(&host, port.as_deref(), ip, insecure)?;
        }
        Ok(())
    }

    /// Whether `host`, on `port` (`None`: the scheme's default, or not
    /// known), may be connected to at `ip`.
    pub fn check_address(
        &self,
        host: &str,
        port: Option<&str>,
        ip: IpAddr,
        insecure: &[String],
    ) -> Result<(), PolicyError> {
        if self.0.open {
            return Ok(());
        }
        let Some(kind) = special_range(ip) else {
            return Ok(());
        };
        if self.0.networks.iter().any(|n| n.contains(&ip)) || self.names_exactly(host, port, insecure) {
            return Ok(());
        }
        Err(PolicyError {
            rule: "allowed_networks",
            message: format!(
                "{host:?} is at {ip}, a {kind} address: allow it with allowed_networks, \
                 or name the host exactly in allowed_registries or insecure_registries"
            ),
        })
    }

    /// Whether the operator named `host` exactly, with this `port` or with
    /// none (it may then be private). A host named with a port is not
    /// named for its other ports: listing `10.0.0.5:5000` must not open
    /// `10.0.0.5:6379`.
    fn names_exactly(&self, host: &str, port: Option<&str>, insecure: &[String]) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let fits = |h: &str, p: Option<&str>| h == host && (p.is_none() || p == port);
        self.0.named.iter().any(|(h, p)| fits(h, p.as_deref()))
            || insecure.iter().any(|i| {
                let (h, p) = split_host_port(i.trim());
                fits(&h, p)
            })
    }

    fn denied(&self, name: &str) -> Option<&Pattern> {
        self.0.deny.iter().find(|p| p.matches(name))
    }

    /// reqwest's redirect policy for this policy: each hop checked, at
    /// most [`MAX_REDIRECTS`].
    pub fn redirect_policy(&self, insecure: Arc<[String]>) -> reqwest::redirect::Policy {
        if self.0.open {
            return reqwest::redirect::Policy::limited(MAX_REDIRECTS);
        }
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                let error = PolicyError {
                    rule: "redirects",
                    message: format!("more than {MAX_REDIRECTS} redirects"),
                };
                return attempt.error(error);
            }
            match policy.check_url(attempt.url(), &insecure) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        })
    }

    /// reqwest's DNS resolver for this policy (`None`: open, the default
    /// resolver), for a client that talks to `registry` (`host[:port]`):
    /// reqwest does not tell a resolver the port, so the registry's own is
    /// given here, for [`Self::names_exactly`].
    pub fn resolver(&self, insecure: Arc<[String]>, registry: &str) -> Option<Arc<PolicyResolver>> {
        let (host, port) = split_host_port(registry);
        (!self.0.open).then(|| {
            Arc::new(PolicyResolver {
                policy: self.clone(),
                insecure,
                home: (host, port.map(str::to_owned)),
            })
        })
    }
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if self.with_port {
            self.matcher.is_match(&name)
        } else {
            self.matcher.is_match(split_host_port(&name).0)
        }
    }
}

fn patterns(key: &'static str, texts: &[String]) -> Result<Vec<Pattern>, PolicySettingsError> {
    texts
        .iter()
        .map(|text| {
            let text = text.trim().to_ascii_lowercase();
            let bad = |reason: String| PolicySettingsError::Pattern {
                key,
                pattern: text.clone(),
                reason,
            };
            if text.is_empty() || text.contains('/') {
                return Err(bad(
                    "expected host[:port], e.g. ghcr.io or *.example.com:5000".into()
                ));
            }
            let matcher = GlobBuilder::new(&text)
                .case_insensitive(true)
                .build()
                .map_err(|e| bad(e.to_string()))?
                .compile_matcher();
            Ok(Pattern {
                with_port: split_host_port(&text).1.is_some(),
                text,
                matcher,
            })
        })
        .collect()
}

/// `host[:port]` → the lowercased host (IPv6 without brackets) and port.
fn split_host_port(s: &str) -> (String, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host.to_ascii_lowercase(), after.strip_prefix(':'));
    }
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit() || b == b'*' || b == b'?') =>
        {
            (host.to_ascii_lowercase(), Some(port))
        }
        _ => (s.to_ascii_lowercase(), None),
    }
}

/// Whether `insecure_registries` lists `name` (`host[:port]`), exactly
/// as Docker's `insecure-registries` does, hosts case-insensitively.
fn listed(insecure: &[String], name: &str) -> bool {
    let (host, port) = split_host_port(name);
    insecure.iter().any(|i| {
        let (h, p) = split_host_port(i.trim());
        h == host && p == port
    })
}

fn plain_http_refused(name: &str) -> PolicyError {
    PolicyError {
        rule: "insecure_registries",
        message: format!(
            "plain HTTP to {name:?} was asked for, but the server does not list it in insecure_registries"
        ),
    }
}

/// The kind of special-purpose address `ip` is, if it is one a registry
/// reached from outside input must not be: where internal services and
/// cloud metadata endpoints (169.254.169.254, fd00:ec2::254) live.
fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (carrier-grade NAT)")
            } else if o[0] == 0 {
                Some("\"this network\"")
            } else if v4.is_multicast() || o[0] >= 240 {
                Some("multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_range(IpAddr::V4(v4));
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_unique_local() {
                Some("unique local (private)")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Resolves names as the system does, then drops the addresses the policy
/// refuses; a name left with none fails with the policy's error.
pub struct PolicyResolver {
    policy: RegistryPolicy,
    insecure: Arc<[String]>,
    /// The registry this client was made for: its port is the one
    /// connected to when its name is resolved (other names: not known).
    home: (String, Option<String>),
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let insecure = self.insecure.clone();
        let host = name.as_str().to_owned();
        let port = host
            .eq_ignore_ascii_case(&self.home.0)
            .then(|| self.home.1.clone())
            .flatten();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(
                    |a| match policy.check_address(&host, port.as_deref(), a.ip(), &insecure) {
                        Ok(()) => true,
                        Err(e) => {
                            refused.get_or_insert(e);
                            false
                        }
                    },
                )
                .collect();
            match refused {
                Some(e) if kept.is_empty() => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The policy's refusal somewhere in an error's chain (reqwest wraps a
/// refused redirect or resolve several times, through `io::Error`s whose
/// `source` skips the error they carry).
pub fn find_policy_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a PolicyError> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(p) = e.downcast_ref::<PolicyError>() {
            return Some(p);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(p) = find_policy_error(inner)
        {
            return Some(p);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str], networks: &[&str]) -> RegistryPolicy {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        RegistryPolicy::new(&PolicySettings {
            allowed_registries: s(allow),
            denied_registries: s(deny),
            allowed_networks: s(networks),
        })
        .unwrap()
    }

    fn rule(r: Result<(), PolicyError>) -> &'static str {
        r.map(|()| "ok").unwrap_or_else(|e| e.rule)
    }

    #[test]
    fn denied_globs_win_over_allowed_ones() {
        let p = policy(&["*.example.com"], &["evil.example.com"], &[]);
        assert_eq!(
            rule(p.check_registry("ghcr.example.com", "ghcr.example.com", &[], false)),
            "ok"
        );
        let e = p
            .check_registry("Evil.Example.com:5000", "Evil.Example.com:5000", &[], false)
            .unwrap_err();
        assert_eq!(e.rule, "denied_registries");
        assert!(e.to_string().contains("\"evil.example.com\""), "{e}");
        assert_eq!(
            rule(p.check_registry("docker.io", "index.docker.io", &[], false)),
            "allowed_registries"
        );
    }

    #[test]
    fn a_pattern_with_a_port_matches_that_port_only() {
        let p = policy(&["registry.corp:5000"], &[], &[]);
        assert_eq!(
            rule(p.check_registry("registry.corp:5000", "registry.corp:5000", &[], false)),
            "ok"
        );
        assert_eq!(
            rule(p.check_registry("registry.corp:6000", "registry.corp:6000", &[], false)),
            "allowed_registries"
        );
        // Docker Hub is allowed by either of its names.
        let hub = policy(&["index.docker.io"], &[], &[]);
        assert_eq!(
            rule(hub.check_registry("docker.io", "index.docker.io", &[], false)),
            "ok"
        );
    }

    #[test]
    fn plain_http_only_to_listed_registries() {
        let p = RegistryPolicy::default();
        let listed = vec!["10.1.2.3:5000".to_string()];
        assert_eq!(
            rule(p.check_registry("10.1.2.3:5000", "10.1.2.3:5000", &listed, true)),
            "ok"
        );
        assert_eq!(
            rule(p.check_registry("registry.example:5000", "registry.example:5000", &listed, true)),
            "insecure_registries"
        );
        assert_eq!(
            rule(p.check_registry("registry.example:5000", "registry.example:5000", &listed, false)),
            "ok"
        );
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused_unless_allowed() {
        let p = RegistryPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                rule(p.check_address("h", None, ip, &[])),
                "allowed_networks",
                "{ip}"
            );
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(
                rule(p.check_address("h", None, ip.parse().unwrap(), &[])),
                "ok",
                "{ip}"
            );
        }
        // An IP literal in a reference is checked before connecting.
        assert_eq!(
            rule(p.check_registry("169.254.169.254", "169.254.169.254", &[], false)),
            "allowed_networks"
        );
        assert_eq!(
            rule(p.check_registry("[::1]:5000", "[::1]:5000", &[], false)),
            "allowed_networks"
        );
        // Allowed by network, or by naming the host exactly.
        let p = policy(&["registry.corp", "*.dev.corp"], &[], &["10.0.0.0/8"]);
        let private = "192.168.0.7".parse().unwrap();
        assert_eq!(
            rule(p.check_address("any", None, "10.9.9.9".parse().unwrap(), &[])),
            "ok"
        );
        assert_eq!(
            rule(p.check_address("registry.corp", Some("443"), private, &[])),
            "ok"
        );
        assert_eq!(
            rule(p.check_address("x.dev.corp", None, private, &[])),
            "allowed_networks",
            "a glob does not name a host"
        );
        // Named with a port: that port only.
        let insecure = vec!["127.0.0.1:5000".to_string()];
        let loopback = "127.0.0.1".parse().unwrap();
        assert_eq!(
            rule(p.check_address("127.0.0.1", Some("5000"), loopback, &insecure)),
            "ok"
        );
        assert_eq!(
            rule(p.check_address("127.0.0.1", Some("6379"), loopback, &insecure)),
            "allowed_networks"
        );
        assert_eq!(
            rule(p.check_address("127.0.0.1", None, loopback, &insecure)),
            "allowed_networks"
        );
        assert_eq!(
            rule(RegistryPolicy::default().check_registry(
                "127.0.0.1:6379",
                "127.0.0.1:6379",
                &insecure,
                false
            )),
            "allowed_networks"
        );
    }

    #[test]
    fn redirects_are_checked_for_scheme_denied_hosts_and_addresses() {
        let p = policy(&["registry.corp"], &["*.internal"], &[]);
        let url = |s: &str| url::Url::parse(s).unwrap();
        // The allow list is for references: a CDN may serve the blobs.
        assert_eq!(rule(p.check_url(&url("https://cdn.example/blob"), &[])), "ok");
        assert_eq!(
            rule(p.check_url(&url("https://db.internal/x"), &[])),
            "denied_registries"
        );
        assert_eq!(
            rule(p.check_url(&url("http://cdn.example/blob"), &[])),
            "insecure_registries"
        );
        assert_eq!(
            rule(p.check_url(&url("https://169.254.169.254/latest"), &[])),
            "allowed_networks"
        );
        assert_eq!(
            rule(p.check_url(&url("https://[::1]:8443/x"), &[])),
            "allowed_networks"
        );
        assert_eq!(rule(p.check_url(&url("file:///etc/passwd"), &[])), "redirects");
        let insecure = vec!["127.0.0.1:5000".to_string()];
        assert_eq!(
            rule(p.check_url(&url("http://127.0.0.1:5000/v2/"), &insecure)),
            "ok"
        );
        assert_eq!(
            rule(p.check_url(&url("http://127.0.0.1:6000/v2/"), &insecure)),
            "insecure_registries"
        );
    }

    #[test]
    fn the_open_policy_checks_nothing() {
        let p = RegistryPolicy::open();
        assert_eq!(
            rule(p.check_registry("127.0.0.1:1", "127.0.0.1:1", &[], true)),
            "ok"
        );
        assert!(p.resolver(Arc::from(Vec::new()), "r").is_none());
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = |s: PolicySettings| RegistryPolicy::new(&s).unwrap_err().to_string();
        let e = bad(PolicySettings {
            allowed_networks: vec!["10.0.0.0".into()],
            ..Default::default()
        });
        assert!(e.starts_with("allowed_networks: \"10.0.0.0\""), "{e}");
        let e = bad(PolicySettings {
            denied_registries: vec!["a/b".into()],
            ..Default::default()
        });
        assert!(e.starts_with("denied_registries: pattern \"a/b\""), "{e}");
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        use reqwest::dns::Resolve as _;
        let p = RegistryPolicy::default();
        let resolver = p.resolver(Arc::from(Vec::new()), "localhost:5000").unwrap();
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match resolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let found = find_policy_error(err.as_ref()).expect("a policy error");
        assert_eq!(found.rule, "allowed_networks");
        // Named in insecure_registries with the client's port: allowed.
        let listed: Arc<[String]> = Arc::from(vec!["localhost:5000".to_string()]);
        let resolver = p.resolver(Arc::clone(&listed), "localhost:5000").unwrap();
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(resolver.resolve(name).await.is_ok());
        // The same name for a client of another port: refused.
        let resolver = p.resolver(listed, "localhost:6379").unwrap();
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(resolver.resolve(name).await.is_err());
    }
}
