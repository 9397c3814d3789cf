//! Page tokens and paging: where the previous page stopped, opaque to
//! clients, bounded in size whatever the references are.

use std::ops::Bound;

use super::{DEFAULT_PAGE_SIZE, IMAGE_PREFIX, MAX_PAGE_SIZE, MAX_PAGE_TOKEN};
use crate::cluster::CoordinatorError;
use crate::cluster::records::image_key;
use strata_proto::text::cut;

/// References longer than this are paged by a prefix and their key (see [`PageToken`]).
const TOKEN_REFERENCE_BYTES: usize = 480;

/// Where the previous page stopped: the last reference served. Opaque to
/// clients (hex). A reference longer than [`TOKEN_REFERENCE_BYTES`] is
/// carried as its prefix and its image key so tokens stay under 1 KB.
pub(super) enum PageToken {
    Start,
    After(String),
    /// Resume after the reference with this prefix and key (if that image is
    /// gone, after every reference with the prefix).
    AfterLong {
        prefix: String,
        key: String,
    },
}

impl PageToken {
    pub(super) fn parse(token: &str) -> Result<PageToken, CoordinatorError> {
        if token.is_empty() {
            return Ok(PageToken::Start);
        }
        let bad = |why: &str| {
            CoordinatorError::InvalidArgument(format!(
                "page_token {:?}: {why}; pass the next_page_token of the previous answer",
                cut(token, 40)
            ))
        };
        if token.len() > MAX_PAGE_TOKEN {
            return Err(bad(&format!("longer than {MAX_PAGE_TOKEN} bytes")));
        }
        let text = |h: &str| {
            hex::decode(h)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("not a page token"))
        };
        if let Some(h) = token.strip_prefix("r") {
            return Ok(PageToken::After(text(h)?));
        }
        if let Some(rest) = token.strip_prefix("k")
            && let Some((h, key)) = rest.split_once('.')
            && key.len() == 32
            && key.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(PageToken::AfterLong {
                prefix: text(h)?,
                key: format!("{IMAGE_PREFIX}{key}"),
            });
        }
        Err(bad("not a page token"))
    }

    pub(super) fn after(reference: &str) -> String {
        if reference.len() <= TOKEN_REFERENCE_BYTES {
            return format!("r{}", hex::encode(reference));
        }
        let prefix = cut(reference, TOKEN_REFERENCE_BYTES / 4);
        let key = image_key(reference);
        format!(
            "k{}.{}",
            hex::encode(prefix),
            key.strip_prefix(IMAGE_PREFIX).unwrap_or(&key)
        )
    }
}

/// Serves one page of `items` (sorted references) from `token`, keeping
/// those `keep` accepts. Returns the page and the next token (empty at the end).
pub(super) fn page<'a, T>(
    items: impl Fn(Bound<&str>) -> Box<dyn Iterator<Item = &'a str> + 'a>,
    token: &PageToken,
    page_size: usize,
    mut keep: impl FnMut(&'a str) -> Option<T>,
) -> (Vec<T>, String) {
    let (start, mut skip): (Bound<&str>, Option<(&str, &str)>) = match token {
        PageToken::Start => (Bound::Unbounded, None),
        PageToken::After(r) => (Bound::Excluded(r.as_str()), None),
        PageToken::AfterLong { prefix, key } => (Bound::Included(prefix.as_str()), Some((prefix, key))),
    };
    let mut out = Vec::new();
    let mut last = None;
    for reference in items(start) {
        if let Some((prefix, key)) = skip {
            if reference.starts_with(prefix) {
                if image_key(reference) == key {
                    skip = None;
                }
                continue;
            }
            skip = None;
        }
        if out.len() == page_size {
            return (out, last.map(PageToken::after).unwrap_or_default());
        }
        if let Some(item) = keep(reference) {
            out.push(item);
            last = Some(reference);
        }
    }
    (out, String::new())
}

/// The page size a client asked for, defaulted and capped.
pub(super) fn page_size(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        assert!(matches!(PageToken::parse("").unwrap(), PageToken::Start));
        let t = PageToken::after("reg/app:v1");
        assert!(matches!(PageToken::parse(&t).unwrap(), PageToken::After(r) if r == "reg/app:v1"));
        let long = format!("reg/{}:v1", "a".repeat(3000));
        let t = PageToken::after(&long);
        assert!(t.len() <= MAX_PAGE_TOKEN);
        assert!(matches!(
            PageToken::parse(&t).unwrap(),
            PageToken::AfterLong { .. }
        ));
        for bad in ["zz", "rzz", "r", "k00.12", &"r".repeat(2000)] {
            assert!(PageToken::parse(bad).is_err(), "{bad}");
        }
    }
}
