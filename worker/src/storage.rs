//! Object-storage URLs (`s3://bucket/key`, `file:///path`), opened through
//! the `object_store` crate. S3 settings (endpoint, region, credentials,
//! `AWS_ALLOW_HTTP`) come from the usual `AWS_*` environment variables.

use object_store::ObjectStore;
use object_store::path::Path as StorePath;

/// The store a URL names and the object's path in it.
pub fn open_url(url: &str) -> Result<(Box<dyn ObjectStore>, StorePath), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    // Unknown AWS_* keys are ignored by object_store; keys are matched lowercased.
    let options: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect();
    object_store::parse_url_opts(&parsed, options).map_err(|e| format!("{url}: {e}"))
}
