//! The records the coordinator keeps in its buckets (JSON), and their keys.
//!
//! - `strata_layers`: one [`LayerRecord`] per (analyser set, layer digest):
//!   the layer index that makes dedup work.
//! - `strata_scans`: one [`ScanRecord`] per scan (an image digest, platform
//!   and analyser set), plus `digest.<hex>` → the latest scan id of an image.
//! - `strata_images`: one [`ImageRecord`] per registered reference (tag →
//!   digest, and whether it is watched).
//!
//! JetStream keys allow `[-/_=.a-zA-Z0-9]`: digests are written
//! `sha256.<hex>` (no `:`), references are hashed.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use strata_proto::v1;

pub const LAYERS_BUCKET: &str = "strata_layers";
pub const SCANS_BUCKET: &str = "strata_scans";
pub const IMAGES_BUCKET: &str = "strata_images";
/// Findings history per registered image (`fleet/history.rs`).
pub const FINDINGS_BUCKET: &str = "strata_findings";

/// `<analyzer-set>.<algorithm>.<hex>`: the layer's dedup key.
pub fn layer_key(analyzer_set: &str, digest: &str) -> String {
    format!("{}.{}", key_token(analyzer_set), digest.replace(':', "."))
}

/// The scan of one image digest with one platform choice, by one analyser set.
pub fn scan_id(image_digest: &str, platform: &str, analyzer_set: &str) -> String {
    let h = sha2::Sha256::digest(format!("{image_digest}\n{platform}\n{analyzer_set}").as_bytes());
    format!("s-{}", &hex::encode(h)[..24])
}

/// The key under which an image digest's latest scan id is kept.
pub fn digest_index_key(image_digest: &str) -> String {
    format!("digest.{}", image_digest.replace(':', "."))
}

/// The key of a registered reference.
pub fn image_key(reference: &str) -> String {
    let h = sha2::Sha256::digest(reference.as_bytes());
    format!("ref.{}", &hex::encode(h)[..32])
}

/// Keeps only characters JetStream allows in a key token.
fn key_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    Queued,
    Analysed,
    Failed,
}

/// Where workers fetch a layer from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobLocation {
    Registry {
        registry: String,
        repository: String,
        insecure: bool,
    },
    ObjectStore {
        url: String,
    },
}

impl BlobLocation {
    pub fn to_proto(&self) -> v1::BlobSource {
        use v1::blob_source::Location;
        v1::BlobSource {
            location: Some(match self {
                BlobLocation::Registry {
                    registry,
                    repository,
                    insecure,
                } => Location::Registry(v1::RegistryBlob {
                    registry: registry.clone(),
                    repository: repository.clone(),
                    insecure: *insecure,
                }),
                BlobLocation::ObjectStore { url } => {
                    Location::ObjectStore(v1::ObjectStoreBlob { url: url.clone() })
                }
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub analyzer_set: String,
    pub state: LayerState,
    pub media_type: String,
    pub size: u64,
    pub location: BlobLocation,
    /// `ci` or `background`: the priority it was queued at.
    pub priority: String,
    /// Bumped each time the layer is queued again after a failure, so the
    /// new job's message id is not dropped as a duplicate of the old one.
    pub generation: u32,
    #[serde(default)]
    pub inventory_key: Option<String>,
    #[serde(default)]
    pub packages: u32,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub permanent: bool,
    pub queued_unix_ms: i64,
    pub updated_unix_ms: i64,
}

impl LayerRecord {
    /// The job's message id: the dedup key on the queue.
    pub fn msg_id(&self) -> String {
        if self.generation == 0 {
            format!("{}/{}", self.digest, self.analyzer_set)
        } else {
            format!("{}/{}/{}", self.digest, self.analyzer_set, self.generation)
        }
    }

    pub fn job(&self) -> v1::LayerJob {
        v1::LayerJob {
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            size: self.size,
            source: Some(self.location.to_proto()),
            analyzer_set_version: self.analyzer_set.clone(),
            priority: if self.priority == "background" {
                v1::Priority::Background.into()
            } else {
                v1::Priority::Ci.into()
            },
            queued_unix_ms: self.queued_unix_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    Pending,
    Running,
    Complete,
    Failed,
}

impl ScanStatus {
    pub fn to_proto(self) -> v1::ScanStatus {
        match self {
            ScanStatus::Pending => v1::ScanStatus::Pending,
            ScanStatus::Running => v1::ScanStatus::Running,
            ScanStatus::Complete => v1::ScanStatus::Complete,
            ScanStatus::Failed => v1::ScanStatus::Failed,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Pending => "pending",
            ScanStatus::Running => "running",
            ScanStatus::Complete => "complete",
            ScanStatus::Failed => "failed",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, ScanStatus::Complete | ScanStatus::Failed)
    }
}

/// A layer's state as one scan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanLayerState {
    Pending,
    Queued,
    Cached,
    Analysed,
    Failed,
}

impl ScanLayerState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ScanLayerState::Cached | ScanLayerState::Analysed | ScanLayerState::Failed
        )
    }
    pub fn to_proto(self) -> v1::LayerState {
        match self {
            ScanLayerState::Pending => v1::LayerState::Unspecified,
            ScanLayerState::Queued => v1::LayerState::Queued,
            ScanLayerState::Cached => v1::LayerState::Cached,
            ScanLayerState::Analysed => v1::LayerState::Analysed,
            ScanLayerState::Failed => v1::LayerState::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanLayer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub state: ScanLayerState,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub packages: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub critical: u32,
    pub high: u32,
    pub medium: u32,
    pub low: u32,
    pub unknown: u32,
}

impl Counts {
    pub fn to_proto(&self) -> v1::SeverityCounts {
        v1::SeverityCounts {
            critical: self.critical,
            high: self.high,
            medium: self.medium,
            low: self.low,
            unknown: self.unknown,
        }
    }
    pub fn from_domain(c: &strata_proto::SeverityCounts) -> Counts {
        Counts {
            critical: c.critical,
            high: c.high,
            medium: c.medium,
            low: c.low,
            unknown: c.unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub id: String,
    /// The reference as submitted, normalised.
    pub reference: String,
    /// The platform asked for (empty: the default).
    pub platform: String,
    pub priority: String,
    pub insecure_registry: bool,
    pub analyzer_set: String,
    pub status: ScanStatus,
    pub image_digest: String,
    pub resolved_platform: String,
    /// Base first.
    pub layers: Vec<ScanLayer>,
    /// Where this image's layers are fetched from.
    pub location: Option<BlobLocation>,
    #[serde(default)]
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    #[serde(default)]
    pub completed_unix_ms: i64,
    #[serde(default)]
    pub counts: Counts,
    #[serde(default)]
    pub packages: u32,
    #[serde(default)]
    pub findings: u32,
    #[serde(default)]
    pub vulndb_version: String,
    #[serde(default)]
    pub report_key: Option<String>,
}

impl ScanRecord {
    pub fn layer_counts(&self) -> (u32, u32, u32) {
        let mut cached = 0;
        let mut analysed = 0;
        let mut failed = 0;
        for l in &self.layers {
            match l.state {
                ScanLayerState::Cached => cached += 1,
                ScanLayerState::Analysed => analysed += 1,
                ScanLayerState::Failed => failed += 1,
                _ => {}
            }
        }
        (cached, analysed, failed)
    }
}

/// A registered (watched) or submitted reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub reference: String,
    pub platform: String,
    pub insecure_registry: bool,
    /// Registered images are rescanned in the background; submitted ones are not.
    pub registered: bool,
    pub digest: String,
    pub scan_id: String,
    pub updated_unix_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_jetstream_keys() {
        let ok = |k: &str| {
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c))
        };
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert!(
            ok(&layer_key("dpkg=3,apk=2", d)),
            "{}",
            layer_key("dpkg=3,apk=2", d)
        );
        assert!(ok(&scan_id(d, "linux/amd64", "x")));
        assert!(ok(&digest_index_key(d)));
        assert!(ok(&image_key("registry.example/a b:c")));
        assert_ne!(scan_id(d, "linux/amd64", "x"), scan_id(d, "linux/arm64", "x"));
        assert_eq!(scan_id(d, "", "x"), scan_id(d, "", "x"));
    }
}
