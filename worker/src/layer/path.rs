//! Entry names → the absolute, normalised paths analysers and inventories
//! use, and whiteout recognition.
//!
//! `./usr//lib/` becomes `/usr/lib`; `a/../b` becomes `/b`; a name whose
//! `..` climbs above the root is an error (it cannot name a file in the
//! image, and only a hostile or broken layer holds one).

/// The name climbs above the root.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Escapes;

/// Absolute, normalised form of a tar entry name (relative to the layer
/// root whether or not it starts with `/`).
pub(crate) fn normalize(name: &str) -> Result<String, Escapes> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or(Escapes)?;
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Ok("/".to_owned());
    }
    let mut out = String::with_capacity(name.len() + 1);
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    Ok(out)
}

/// What a normalised path means for the overlay.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// `DIR/.wh.NAME`: `DIR/NAME` is deleted from lower layers.
    Whiteout(String),
    /// `DIR/.wh..wh..opq`: lower layers' contents of `DIR` are hidden.
    Opaque(String),
    /// Other `.wh..wh.*` names are AUFS bookkeeping: neither file nor whiteout.
    Ignored,
}

const WH: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// `None` for an ordinary path.
pub(crate) fn special(path: &str) -> Option<Special> {
    let (dir, name) = path.rsplit_once('/')?;
    if !name.starts_with(WH) {
        return None;
    }
    let dir = if dir.is_empty() { "/" } else { dir };
    if name == OPAQUE {
        return Some(Special::Opaque(dir.to_owned()));
    }
    if name.starts_with(".wh..wh.") {
        return Some(Special::Ignored);
    }
    let target = &name[WH.len()..];
    match target {
        // `.wh.`, `.wh..`, `.wh...` name nothing deletable.
        "" | "." | ".." => Some(Special::Ignored),
        t if dir == "/" => Some(Special::Whiteout(format!("/{t}"))),
        t => Some(Special::Whiteout(format!("{dir}/{t}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names() {
        for (raw, want) in [
            ("./var/lib/dpkg/status", "/var/lib/dpkg/status"),
            ("var/lib/dpkg/status", "/var/lib/dpkg/status"),
            ("/var//lib/./dpkg/status", "/var/lib/dpkg/status"),
            ("usr/lib/", "/usr/lib"),
            ("a/b/../c", "/a/c"),
            ("./", "/"),
            ("", "/"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn rejects_escapes() {
        for raw in ["../etc/passwd", "./../x", "a/../../x", "/.."] {
            assert_eq!(normalize(raw), Err(Escapes), "{raw:?}");
        }
    }

    #[test]
    fn recognises_whiteouts() {
        assert_eq!(
            special("/etc/.wh.passwd"),
            Some(Special::Whiteout("/etc/passwd".into()))
        );
        assert_eq!(special("/.wh.etc"), Some(Special::Whiteout("/etc".into())));
        assert_eq!(
            special("/usr/lib/.wh..wh..opq"),
            Some(Special::Opaque("/usr/lib".into()))
        );
        assert_eq!(special("/.wh..wh..opq"), Some(Special::Opaque("/".into())));
        assert_eq!(special("/.wh..wh.plnk"), Some(Special::Ignored));
        assert_eq!(special("/x/.wh.."), Some(Special::Ignored));
        assert_eq!(special("/etc/passwd.wh.x"), None);
        assert_eq!(special("/etc/passwd"), None);
        assert_eq!(special("/"), None);
    }
}
