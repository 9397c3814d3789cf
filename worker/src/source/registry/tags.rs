//! Tag lists (`/v2/<name>/tags/list`) for the coordinator's watched
//! repositories: same authorization as pulls, `Link` pages on the same
//! registry only, bounded in pages, bytes per page and tags.

use super::errors::{failed, one_line, read_body};
use super::{RegistrySource, SourceError};

impl RegistrySource {
    /// The tags of this reference's repository, from the registry's
    /// `/v2/<name>/tags/list`, with the same authentication as pulls
    /// (anonymous, basic from the Docker config, or a bearer token from the
    /// registry's challenge). Follows `Link: <…>; rel="next"` pages on the
    /// same registry only (same scheme, host and port), at most `max_pages`
    /// of them, each at most `max_page_bytes`; stops with
    /// [`TagListError::TooManyTags`] past `max_tags`. Sorted, without duplicates.
    pub async fn list_tags(
        &self,
        max_tags: usize,
        max_pages: usize,
        max_page_bytes: u64,
    ) -> Result<Vec<String>, TagListError> {
        let registry = self.reference.registry();
        let what = format!("{registry}/{}: tag list", self.reference.repository());
        let registry_error = |message: String| SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: {message}"),
        };
        let base = format!("{}://{}", self.scheme, self.reference.resolve_registry());
        let first = format!(
            "{base}/v2/{}/tags/list?n={TAG_PAGE_SIZE}",
            self.reference.repository()
        );
        let mut url = url::Url::parse(&first).map_err(|e| registry_error(format!("URL {first:?}: {e}")))?;
        let origin = url.origin();
        let mut tags = Vec::new();
        for _ in 0..max_pages {
            let (body, link) = self.tag_page(&url, max_page_bytes, &what).await?;
            let page: TagPage = serde_json::from_slice(&body)
                .map_err(|e| registry_error(format!("answer is not a tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            if tags.len() > max_tags {
                return Err(TagListError::TooManyTags {
                    repository: format!("{registry}/{}", self.reference.repository()),
                    limit: max_tags,
                });
            }
            let Some(next) = link.as_deref().and_then(next_link) else {
                tags.sort();
                tags.dedup();
                return Ok(tags);
            };
            url = match url.join(next) {
                Ok(u) if u.origin() == origin => u,
                _ => {
                    return Err(registry_error(format!(
                        "page link {:?} leaves the registry",
                        one_line(next)
                    ))
                    .into());
                }
            };
        }
        Err(registry_error(format!("more than {max_pages} pages")).into())
    }

    /// One page of a tag list: its body (at most `limit` bytes) and its
    /// `Link` header. On 401, authenticates afresh once.
    async fn tag_page(
        &self,
        url: &url::Url,
        limit: u64,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), SourceError> {
        let registry = self.reference.registry();
        let mut response = self
            .send_authorized(
                || {
                    self.http
                        .get(url.as_str())
                        .header(reqwest::header::ACCEPT, "application/json")
                },
                what,
            )
            .await?;
        let status = response.status();
        let link = response
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        if !status.is_success() {
            // Whatever the envelope's codes, these statuses mean what they say.
            return Err(match (status.as_u16(), failed(response, registry, what).await) {
                (404, e @ SourceError::NotFound(_)) | (401 | 403, e @ SourceError::Unauthorized(_)) => e,
                (404, e) => SourceError::NotFound(strip_registry(e)),
                (401 | 403, e) => SourceError::Unauthorized(strip_registry(e)),
                (_, e) => e,
            });
        }
        let body = read_body(&mut response, limit, registry, what)
            .await?
            .ok_or_else(|| SourceError::Registry {
                registry: registry.to_owned(),
                message: format!("{what}: page larger than {limit} bytes"),
            })?;
        Ok((body, (!link.is_empty()).then_some(link)))
    }
}

/// Tags asked for per page of a tag list (registries may send fewer).
const TAG_PAGE_SIZE: usize = 1000;

/// Why [`RegistrySource::list_tags`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum TagListError {
    /// The repository has more tags than the caller accepts.
    #[error("{repository} has more than {limit} tags")]
    TooManyTags { repository: String, limit: usize },
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl TagListError {
    /// Whether the listing stopped at the caller's tag limit.
    pub fn is_too_many_tags(&self) -> bool {
        matches!(self, TagListError::TooManyTags { .. })
    }
}

impl From<TagListError> for SourceError {
    fn from(e: TagListError) -> SourceError {
        match e {
            TagListError::TooManyTags { repository, limit } => {
                SourceError::format(repository, format!("more than {limit} tags"))
            }
            TagListError::Source(e) => e,
        }
    }
}

/// One page of `/v2/<name>/tags/list`: `{"name": …, "tags": […] | null}`.
#[derive(serde::Deserialize)]
struct TagPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The target of the `rel="next"` link in a `Link` header, as written.
fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = after[..end].trim();
        let params = &after[end + 1..];
        let params_end = params.find('<').unwrap_or(params.len());
        let is_next = params[..params_end].split([';', ',']).any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(target);
        }
        rest = &params[params_end..];
    }
    None
}

/// The message of an error without its `registry …:` prefix.
fn strip_registry(e: SourceError) -> String {
    match e {
        SourceError::Registry { message, .. } => message,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(r#"<http://r/v2/a/tags/list?last=x>; rel=prev, <http://r/x?last=y>;rel="next""#),
            Some("http://r/x?last=y")
        );
        assert_eq!(next_link(r#"<u>; title="x"; rel="first next""#), Some("u"));
        assert_eq!(next_link(r#"<u>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link("<unterminated; rel=next"), None);
    }
}
