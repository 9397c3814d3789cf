//! Blobs of local images (OCI layouts, docker archives): workers elsewhere
//! cannot read the coordinator's files, so their layers are copied to the
//! object store at `blobs/<alg>/<hex>`, and the job names that URL.

use object_store::{ObjectStoreExt as _, PutPayload, path::Path as StorePath};
use strata_worker::source::{ImageSource, LayerDesc};
use tokio::io::AsyncReadExt as _;

use super::error::from_json;
use super::records::*;
use super::{Coordinator, CoordinatorError};

impl Coordinator {
    /// Copies layer blobs of a local image to `blobs/<alg>/<hex>` in the
    /// store, unless already there or already analysed.
    pub(super) async fn copy_local_blobs(
        &self,
        source: &dyn ImageSource,
        layers: &[LayerDesc],
    ) -> Result<(), CoordinatorError> {
        for layer in layers {
            let key = layer_key(&self.inner.config.analyzer_set, layer.digest.as_str());
            if let Some(e) = self.inner.buckets.layers.get(&key).await?
                && from_json::<LayerRecord>("layer", &e.value)?.state == LayerState::Analysed
            {
                continue;
            }
            let path = blob_path(&layer.digest);
            if self.inner.store.head(&path).await.is_ok() {
                continue;
            }
            let mut reader = source.open_layer(layer).await?;
            // Bounded by the descriptor's size (the reader enforces it).
            let mut buf = Vec::with_capacity(usize::try_from(layer.size.min(64 << 20)).unwrap_or(0));
            reader
                .read_to_end(&mut buf)
                .await
                .map_err(|e| CoordinatorError::InvalidArgument(format!("layer {}: {e}", layer.digest)))?;
            self.inner
                .store
                .put(&path, PutPayload::from(buf))
                .await
                .map_err(|e| CoordinatorError::Unavailable(format!("storing blob {}: {e}", layer.digest)))?;
        }
        Ok(())
    }

    pub(super) fn blob_url(&self, digest: &str) -> String {
        let base = self.inner.config.store_url.trim_end_matches('/');
        format!("{base}/{}", blob_path_str(digest))
    }
}

fn blob_path_str(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

fn blob_path(digest: &strata_proto::Digest) -> StorePath {
    StorePath::from(blob_path_str(digest.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_by_algorithm_and_hex() {
        let hex = "ab".repeat(32);
        assert_eq!(
            blob_path_str(&format!("sha256:{hex}")),
            format!("blobs/sha256/{hex}")
        );
        assert_eq!(
            blob_path_str(&format!("sha512:{hex}")),
            format!("blobs/sha512/{hex}")
        );
        // A bare hex is taken as sha256.
        assert_eq!(blob_path_str(&hex), format!("blobs/sha256/{hex}"));
        let digest: strata_proto::Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(blob_path(&digest).as_ref(), format!("blobs/sha256/{hex}"));
    }
}
