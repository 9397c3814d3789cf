//! What an ELF file's program headers say about where its bytes lie, read
//! from the head the layer reader shows streaming analysers: the loaded
//! segments' extent in the file. Lets them skip what cannot hold what they
//! look for (code and read-only data, most of a binary) as it streams past.
//! Written by hand: the ELF crates parse whole files, not a file's first
//! few KiB; the header and program header layouts are short and fixed.

/// Where the loaded segments lie in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segments {
    /// File offset of the first writable loaded segment (`.data`, and Go's
    /// `.go.buildinfo`), and where it ends in the file.
    pub writable: Option<(u64, u64)>,
    /// The end of the last loaded segment's bytes in the file: what follows
    /// is not loaded (section data such as `.comment`, `.dep-v0`, symbols).
    pub load_end: u64,
}

const PT_LOAD: u64 = 1;
const PF_W: u64 = 2;

/// The segments of the ELF file whose first bytes are `head`, when its
/// program headers lie within `head`; `None` otherwise (not ELF, malformed,
/// or headers further in: callers then look at every byte).
pub(crate) fn segments(head: &[u8]) -> Option<Segments> {
    if !head.starts_with(b"\x7fELF") || head.len() < 64 {
        return None;
    }
    let little = match head[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u64> {
        let b: [u8; 2] = head.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let u32_at = |at: usize| -> Option<u64> {
        let b: [u8; 4] = head.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = head.get(at..at + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    // (phoff, phentsize, phnum), and per entry (type, flags, offset, filesz).
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(32)?, u16_at(54)?, u16_at(56)?)
    } else {
        (u32_at(28)?, u16_at(42)?, u16_at(44)?)
    };
    if phentsize < if wide { 56 } else { 32 } || phnum == 0 {
        return None;
    }
    let end = phoff.checked_add(phentsize.checked_mul(phnum)?)?;
    if end > head.len() as u64 {
        return None;
    }
    let mut writable: Option<(u64, u64)> = None;
    let mut load_end = 0u64;
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).ok()?;
        let (kind, flags, offset, filesz) = if wide {
            (u32_at(at)?, u32_at(at + 4)?, u64_at(at + 8)?, u64_at(at + 32)?)
        } else {
            (u32_at(at)?, u32_at(at + 24)?, u32_at(at + 4)?, u32_at(at + 16)?)
        };
        if kind != PT_LOAD {
            continue;
        }
        let seg_end = offset.checked_add(filesz)?;
        load_end = load_end.max(seg_end);
        if flags & PF_W != 0 && writable.is_none_or(|(o, _)| offset < o) {
            writable = Some((offset, seg_end));
        }
    }
    Some(Segments { writable, load_end })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 little-endian head with the given (flags, offset, filesz) loads.
    fn head(loads: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&(loads.len() as u16 + 1).to_le_bytes());
        // A PT_PHDR first, then the loads.
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&6u32.to_le_bytes());
        h.extend_from_slice(&ph);
        for &(flags, offset, filesz) in loads {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&(PT_LOAD as u32).to_le_bytes());
            ph[4..8].copy_from_slice(&flags.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[32..40].copy_from_slice(&filesz.to_le_bytes());
            h.extend_from_slice(&ph);
        }
        h
    }

    #[test]
    fn loaded_extent_and_first_writable_segment() {
        // nats-server's layout (PyPI build).
        let h = head(&[(5, 0, 0x845b51), (4, 0x846000, 0x7e23f0), (6, 0x1029000, 0x65520)]);
        assert_eq!(
            segments(&h),
            Some(Segments {
                writable: Some((0x1029000, 0x1029000 + 0x65520)),
                load_end: 0x1029000 + 0x65520
            })
        );
    }

    #[test]
    fn the_real_rust_binary() {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/analyzers/cargo_auditable/testdata/rustapp"
        ))
        .unwrap();
        let s = segments(&file[..4096]).unwrap();
        // readelf: the last LOAD is at 0x529f8 with 0x9c0 bytes; .dep-v0 at 0x5346a.
        assert_eq!(s.load_end, 0x529f8 + 0x9c0);
        assert!(s.load_end <= 0x5346a);
        assert_eq!(s.writable.map(|w| w.0), Some(0x502b0));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(segments(b"MZ\x90\0"), None);
        assert_eq!(segments(&[0x7f, b'E', b'L', b'F', 2, 1]), None, "short");
        let mut far = head(&[(6, 0, 10)]);
        far[32..40].copy_from_slice(&100_000u64.to_le_bytes());
        assert_eq!(segments(&far), None, "program headers past the head");
        let mut bad = head(&[(6, 0, 10)]);
        bad[54..56].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(segments(&bad), None, "entries too small");
        let mut overflow = head(&[(6, u64::MAX, 10)]);
        overflow[5] = 1;
        assert_eq!(segments(&overflow), None, "offset + size overflows");
    }
}
