//! Blob streams: fetched by hand, bounded by the descriptor's size, their
//! sha256 checked as they stream past.

use strata_proto::Digest;
use tokio_util::io::StreamReader;

use super::errors::failed;
use super::{LayerDesc, RegistrySource, SourceError};
use crate::source::BoundedReader;

pub(super) type LayerStream =
    StreamReader<futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>, bytes::Bytes>;

impl RegistrySource {
    /// Streams one blob. Fetched by hand with `reqwest` (like manifests),
    /// not through `oci-client`, to see the response's headers: a `429`
    /// becomes [`SourceError::RateLimited`] with the registry's
    /// `Retry-After`, which workers honour. Redirects (to blob storage) are
    /// followed; `reqwest` drops the `Authorization` header when a redirect
    /// leaves the registry's host.
    pub(super) async fn blob_reader(
        &self,
        blob: &LayerDesc,
    ) -> Result<BoundedReader<LayerStream>, SourceError> {
        let what = format!(
            "{}/{}: blob {}",
            self.reference.registry(),
            self.reference.repository(),
            blob.digest
        );
        let registry = self.reference.registry();
        let url = format!(
            "{}://{}/v2/{}/blobs/{}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository(),
            blob.digest
        );
        let response = self.send_authorized(|| self.http.get(&url), &what).await?;
        if !response.status().is_success() {
            return Err(failed(response, registry, &what).await);
        }
        if let Some(len) = response.content_length()
            && len != blob.size
        {
            return Err(SourceError::format(
                what,
                format!("registry sends {len} bytes, descriptor says {}", blob.size),
            ));
        }
        use futures::TryStreamExt as _;
        let stream: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> =
            Box::pin(DigestCheck {
                // The whole chain: reqwest says "error decoding response
                // body" and keeps "operation timed out" in its sources.
                inner: response
                    .bytes_stream()
                    .map_err(|e| std::io::Error::other(strata_proto::text::error_chain(&e))),
                hasher: Some(<sha2::Sha256 as sha2::Digest>::new()),
                expected: blob.digest.clone(),
            });
        Ok(BoundedReader::new(
            StreamReader::new(stream),
            blob.size,
            blob.digest.to_string(),
        ))
    }
}

/// Checks a blob's sha256 as it streams past: the end of a blob whose bytes
/// are not its digest is an error, whoever reads it (the layer reader checks
/// too; a config or a caller of `open_layer` may not).
struct DigestCheck<S> {
    inner: S,
    hasher: Option<sha2::Sha256>,
    expected: Digest,
}

impl<S> futures::Stream for DigestCheck<S>
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use sha2::Digest as _;
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => match self.hasher.take() {
                Some(h) => {
                    let got = hex::encode(h.finalize());
                    if self.expected.algorithm() == "sha256" && got != self.expected.hex() {
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("blob {}: content has digest sha256:{got}", self.expected),
                        ))))
                    } else {
                        Poll::Ready(None)
                    }
                }
                None => Poll::Ready(None),
            },
            other => other,
        }
    }
}
