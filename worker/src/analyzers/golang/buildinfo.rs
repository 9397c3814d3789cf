//! Go build information, as the Go linker writes it (Go 1.18 and later):
//! a 32-byte header in the binary's `.go.buildinfo` data, 16-byte aligned,
//!
//! ```text
//! "\xff Go buildinf:"  ptr size (1)  flags (1)  padding to 32
//! ```
//!
//! then, with the "inline strings" flag (`0x2`), two strings each preceded
//! by its length as an unsigned varint: the toolchain version (`go1.22.1`)
//! and the module information, 16 bytes of sentinel on each side of lines
//! like `path`, `mod`, `dep`, `=>` (replacing the module above) and
//! `build`, tab-separated. Earlier toolchains (before 1.18) store pointers
//! to the strings instead, which cannot be followed in one pass over the
//! file: such binaries give a warning.

/// `\xff Go buildinf:`: the header's first bytes.
pub(super) const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// The header's size; the strings start after it.
pub(super) const HEADER: usize = 32;
/// The header's alignment in the file: a match elsewhere is the magic as a
/// literal (programs that read build information carry it), not a header.
pub(super) const ALIGN: u64 = 16;
/// Flag: the version and module strings follow the header inline.
const FLAG_INLINE: u8 = 0x2;
/// Longest toolchain version string accepted.
pub(super) const MAX_VERSION: u64 = 256;
/// Longest module information accepted (thousands of dependencies fit).
pub(super) const MAX_MODINFO: u64 = 4 << 20;
/// The sentinels around the module information.
const MODINFO_START: [u8; 16] = [
    0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
];
const MODINFO_END: [u8; 16] = [
    0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
];

/// What a header's two bytes after the magic say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    /// Inline strings follow.
    Inline,
    /// Pointers (Go before 1.18): not readable in one pass.
    Pointers,
    /// Not a header (a stray copy of the magic).
    Invalid,
}

pub(super) fn header(ptr_size: u8, flags: u8) -> Header {
    if !matches!(ptr_size, 4 | 8) || flags & !0x3 != 0 {
        return Header::Invalid;
    }
    if flags & FLAG_INLINE != 0 {
        Header::Inline
    } else {
        Header::Pointers
    }
}

/// An unsigned LEB128 varint at the start of `b`: its value and length,
/// `None` when `b` ends first (or it is longer than 10 bytes).
pub(super) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The module information without its sentinels; `None` when they are not
/// there (a binary built without module support: only a version).
pub(super) fn strip_sentinels(modinfo: &[u8]) -> Option<&[u8]> {
    if modinfo.len() < 33 {
        return None;
    }
    let (start, rest) = modinfo.split_at(16);
    let (body, end) = rest.split_at(rest.len() - 16);
    (start == MODINFO_START && end == MODINFO_END).then_some(body)
}

/// One module: its path and version (and whether a `=>` replaced it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Module {
    pub path: String,
    pub version: String,
}

/// The modules a binary names: its main module and dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Modules {
    /// The main package's path (`path` line).
    pub path: Option<String>,
    pub main: Option<Module>,
    pub deps: Vec<Module>,
}

/// Parses module information lines. A `=>` line replaces the module
/// above it: by the replacement's path and version when it has one; a
/// replacement by a local directory (no version) leaves the original path
/// with version `(devel)`, which nothing matches. Unknown lines are skipped.
pub(super) fn parse_modinfo(text: &str, max_modules: usize) -> Modules {
    let mut m = Modules::default();
    // Which module a `=>` replaces: the last `mod` or `dep`.
    enum Last {
        None,
        Main,
        Dep,
    }
    let mut last = Last::None;
    for line in text.lines() {
        let mut fields = line.split('\t');
        let kind = fields.next().unwrap_or_default();
        let path = fields.next().unwrap_or_default().trim();
        let version = fields.next().unwrap_or_default().trim();
        match kind {
            "path" if !path.is_empty() => m.path = Some(path.to_owned()),
            "mod" if !path.is_empty() => {
                m.main = Some(module(path, version));
                last = Last::Main;
            }
            "dep" if !path.is_empty() && m.deps.len() < max_modules => {
                m.deps.push(module(path, version));
                last = Last::Dep;
            }
            "=>" => {
                let slot = match last {
                    Last::Main => m.main.as_mut(),
                    Last::Dep => m.deps.last_mut(),
                    Last::None => None,
                };
                if let Some(slot) = slot {
                    if version.is_empty() {
                        slot.version = DEVEL.to_owned();
                    } else if !path.is_empty() {
                        *slot = module(path, version);
                    }
                }
                last = Last::None;
            }
            _ => {}
        }
    }
    // Built without module information (`go build` in GOPATH mode, or a
    // distribution's build from a source tarball): the main package's path
    // names the program, at `(devel)`, as `go version -m` and Syft show it.
    if m.main.is_none()
        && let Some(path) = &m.path
        && path != "command-line-arguments"
    {
        m.main = Some(module(path, DEVEL));
    }
    m
}

/// The version Go gives a module built outside a released version.
pub(super) const DEVEL: &str = "(devel)";

fn module(path: &str, version: &str) -> Module {
    Module {
        path: path.to_owned(),
        version: if version.is_empty() {
            DEVEL.to_owned()
        } else {
            version.to_owned()
        },
    }
}

/// The toolchain version as OSV writes Go's standard library versions:
/// `go1.19.8` → `1.19.8`, `go1.20` → `1.20.0`, `go1.21rc2` → `1.21.0-rc.2`,
/// `go1.19beta1` → `1.19.0-beta.1`; an experiment suffix
/// (`go1.22.1 X:boringcrypto`) is dropped. `None` for anything else
/// (`devel go1.23-abcdef`: a toolchain built from source).
pub(super) fn stdlib_version(toolchain: &str) -> Option<String> {
    let v = toolchain.split_whitespace().next()?.strip_prefix("go")?;
    let (num, pre) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    let parts: Vec<&str> = num.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let patch = parts.get(2).copied().unwrap_or("0");
    let base = format!("{}.{}.{patch}", parts[0], parts.get(1).copied().unwrap_or("0"));
    match pre {
        None => Some(base),
        Some(pre) => {
            let (label, n) = pre.split_at(pre.find(|c: char| c.is_ascii_digit())?);
            if !matches!(label, "rc" | "beta" | "alpha") || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(format!("{base}-{label}.{n}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(uvarint(&[0xd5, 0x09]), Some((0x4d5, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[0xff; 11]), None);
    }

    #[test]
    fn toolchain_versions_as_osv_writes_them() {
        assert_eq!(stdlib_version("go1.19.8").as_deref(), Some("1.19.8"));
        assert_eq!(stdlib_version("go1.20").as_deref(), Some("1.20.0"));
        assert_eq!(stdlib_version("go1.21rc2").as_deref(), Some("1.21.0-rc.2"));
        assert_eq!(stdlib_version("go1.19beta1").as_deref(), Some("1.19.0-beta.1"));
        assert_eq!(
            stdlib_version("go1.22.1 X:boringcrypto").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(stdlib_version("devel go1.23-abcdef"), None);
        assert_eq!(stdlib_version("go1.x"), None);
        assert_eq!(stdlib_version(""), None);
    }

    #[test]
    fn module_lines_with_replacements() {
        let text = "path\tgithub.com/nats-io/nats-server/v2\n\
                    mod\tgithub.com/nats-io/nats-server/v2\tv2.15.1\t\n\
                    dep\tgithub.com/klauspost/compress\tv1.20.1\th1:x=\n\
                    dep\tgolang.org/x/crypto\tv0.1.0\th1:y=\n\
                    =>\tgithub.com/fork/crypto\tv0.2.0\th1:z=\n\
                    dep\texample.com/local\tv1.0.0\n\
                    =>\t../local\t\n\
                    build\tGOOS=linux\n\
                    garbage\n";
        let m = parse_modinfo(text, 100);
        assert_eq!(m.path.as_deref(), Some("github.com/nats-io/nats-server/v2"));
        assert_eq!(
            m.main,
            Some(module("github.com/nats-io/nats-server/v2", "v2.15.1"))
        );
        assert_eq!(
            m.deps,
            [
                module("github.com/klauspost/compress", "v1.20.1"),
                module("github.com/fork/crypto", "v0.2.0"),
                module("example.com/local", DEVEL),
            ]
        );
        assert_eq!(parse_modinfo(text, 1).deps.len(), 1, "capped");
        let devel = parse_modinfo("mod\texample.com/app\t(devel)\t\n", 10);
        assert_eq!(devel.main, Some(module("example.com/app", DEVEL)));
        let gopath = parse_modinfo("path\tgithub.com/nats-io/nats-server\nbuild\t-compiler=gc\n", 10);
        assert_eq!(gopath.main, Some(module("github.com/nats-io/nats-server", DEVEL)));
        let run = parse_modinfo("path\tcommand-line-arguments\n", 10);
        assert_eq!(run.main, None);
    }

    #[test]
    fn headers_and_sentinels() {
        assert_eq!(header(8, 2), Header::Inline);
        assert_eq!(header(4, 3), Header::Inline);
        assert_eq!(header(8, 0), Header::Pointers);
        assert_eq!(header(7, 2), Header::Invalid);
        assert_eq!(header(8, 0x80), Header::Invalid);
        let mut wrapped = MODINFO_START.to_vec();
        wrapped.extend_from_slice(b"path\tx\n");
        wrapped.extend_from_slice(&MODINFO_END);
        assert_eq!(strip_sentinels(&wrapped), Some(&b"path\tx\n"[..]));
        assert_eq!(strip_sentinels(b"path\tx\n"), None);
    }
}
