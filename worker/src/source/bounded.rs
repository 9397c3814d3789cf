//! [`BoundedReader`]: a reader that must yield exactly `size` bytes.
//!
//! Written by hand because `tokio::io::Take` truncates silently: a blob longer
//! than its descriptor must be an error (it cannot match its digest, and it
//! must not make us read without bound), and so must a short one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Yields the inner reader's bytes; fails with `InvalidData` as soon as more
/// than `size` bytes arrive, and with `UnexpectedEof` if it ends short.
pub struct BoundedReader<R> {
    inner: R,
    remaining: u64,
    size: u64,
    what: String,
}

impl<R> BoundedReader<R> {
    /// `what` names the blob in errors (its digest).
    pub fn new(inner: R, size: u64, what: impl Into<String>) -> Self {
        BoundedReader {
            inner,
            remaining: size,
            size,
            what: what.into(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for BoundedReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Read at most one byte past the bound, to notice an overlong blob
        // without ever handing its extra bytes to the caller.
        let limit = usize::try_from(this.remaining.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        // A plain sub-buffer over zeroed memory keeps this free of `unsafe`.
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(limit));
        match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                if n as u64 > this.remaining {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: blob is longer than its descriptor's {} bytes",
                            this.what, this.size
                        ),
                    )));
                }
                if n == 0 && this.remaining > 0 && limit > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: blob ended after {} of {} bytes",
                            this.what,
                            this.size - this.remaining,
                            this.size
                        ),
                    )));
                }
                buf.advance(n);
                this.remaining -= n as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_all(data: &'static [u8], size: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        BoundedReader::new(data, size, "blob")
            .read_to_end(&mut out)
            .await?;
        Ok(out)
    }

    #[tokio::test]
    async fn exact_short_and_long() {
        assert_eq!(read_all(b"hello", 5).await.ok().as_deref(), Some(&b"hello"[..]));
        assert_eq!(read_all(b"", 0).await.ok().as_deref(), Some(&b""[..]));
        let short = read_all(b"hell", 5).await.err().map(|e| e.kind());
        assert_eq!(short, Some(io::ErrorKind::UnexpectedEof));
        let long = read_all(b"hello!", 5).await.err().map(|e| e.kind());
        assert_eq!(long, Some(io::ErrorKind::InvalidData));
    }
}
