//! Just enough ELF to tell a static executable from a dynamic one: the
//! program headers (`PT_INTERP`: a dynamic loader is needed) and the
//! dynamic section (`DT_NEEDED`: shared libraries are needed). Used by
//! `dist` on the release binary and by the bare-initramfs VM check on every
//! file it puts in the guest.

/// What the headers of an ELF64 little-endian image say about linking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linking {
    /// A `PT_INTERP` program header: the kernel starts a loader first.
    pub interp: bool,
    /// `DT_NEEDED` entries: shared libraries the loader must find.
    pub needed: usize,
}

impl Linking {
    /// Runs with nothing but the kernel: no loader, no libraries.
    pub fn is_static(self) -> bool {
        !self.interp && self.needed == 0
    }
}

/// Whether `data` starts with the ELF magic (any class or byte order).
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// `e_machine` of an ELF64 little-endian image (62 x86-64, 183 `AArch64`);
/// `None` when `data` is not one.
pub fn machine(elf: &[u8]) -> Option<u16> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    Some(u16::from_le_bytes(elf.get(0x12..0x14)?.try_into().ok()?))
}

/// The linking facts of an ELF64 little-endian image; `None` when `data` is
/// not one or its program headers or dynamic section lie outside it.
pub fn linking(elf: &[u8]) -> Option<Linking> {
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NULL: u64 = 0;
    const DT_NEEDED: u64 = 1;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| {
        Some(u16::from_le_bytes(
            elf.get(o..o.checked_add(2)?)?.try_into().ok()?,
        ))
    };
    let u32_at = |o: usize| {
        Some(u32::from_le_bytes(
            elf.get(o..o.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let u64_at = |o: usize| {
        Some(u64::from_le_bytes(
            elf.get(o..o.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let mut out = Linking {
        interp: false,
        needed: 0,
    };
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        match u32_at(ph)? {
            PT_INTERP => out.interp = true,
            PT_DYNAMIC => {
                // Elf64_Phdr: p_offset at +8, p_filesz at +32; entries are
                // (d_tag, d_val) pairs of u64 up to DT_NULL.
                let off = usize::try_from(u64_at(ph + 8)?).ok()?;
                let size = usize::try_from(u64_at(ph + 32)?).ok()?;
                for e in 0..size / 16 {
                    let tag = u64_at(off.checked_add(e * 16)?)?;
                    if tag == DT_NULL {
                        break;
                    }
                    if tag == DT_NEEDED {
                        out.needed += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// What the dynamic loader must bring: the interpreter path (`PT_INTERP`)
/// and the `DT_NEEDED` library names, in order. For a file of another
/// architecture, where `ldd` cannot run. `None` when `elf` is not an ELF64
/// little-endian image or its headers point outside it.
pub fn dynamic_needs(elf: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NEEDED: u64 = 1;
    const DT_STRTAB: u64 = 5;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u64_at = |o: usize| {
        Some(u64::from_le_bytes(
            elf.get(o..o.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    let word = |o: usize| usize::try_from(u64_at(o)?).ok();
    let cstr = |o: usize| {
        let rest = elf.get(o..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let phoff = word(0x20)?;
    let phentsize = usize::from(u16::from_le_bytes(elf.get(0x36..0x38)?.try_into().ok()?));
    let phnum = usize::from(u16::from_le_bytes(elf.get(0x38..0x3a)?.try_into().ok()?));
    let mut interp = None;
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let kind = u32::from_le_bytes(elf.get(ph..ph + 4)?.try_into().ok()?);
        let (off, vaddr, filesz) = (word(ph + 8)?, word(ph + 16)?, word(ph + 32)?);
        match kind {
            PT_INTERP => interp = Some(cstr(off)?),
            PT_LOAD => loads.push((vaddr, off, filesz)),
            PT_DYNAMIC => dynamic = Some((off, filesz)),
            _ => {}
        }
    }
    let Some((off, size)) = dynamic else {
        return Some((interp, Vec::new()));
    };
    let mut strtab = None;
    let mut needed = Vec::new();
    for e in 0..size / 16 {
        let at = off.checked_add(e * 16)?;
        match u64_at(at)? {
            0 => break,
            DT_NEEDED => needed.push(word(at + 8)?),
            DT_STRTAB => strtab = Some(word(at + 8)?),
            _ => {}
        }
    }
    if needed.is_empty() {
        return Some((interp, Vec::new()));
    }
    let strtab = strtab?;
    let (vaddr, foff, _) = loads
        .iter()
        .copied()
        .find(|&(v, _, sz)| v <= strtab && strtab < v.saturating_add(sz))?;
    let base = strtab - vaddr + foff;
    let names = needed
        .into_iter()
        .map(|n| cstr(base.checked_add(n)?))
        .collect::<Option<Vec<_>>>()?;
    Some((interp, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_dynamic_from_static() {
        // This test binary is dynamically linked (the default for the gnu
        // target): a loader and at least libc.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let l = linking(&me).unwrap();
        if cfg!(target_feature = "crt-static") {
            assert!(l.is_static(), "{l:?}");
        } else {
            assert!(l.interp && l.needed > 0, "{l:?}");
            assert!(!l.is_static());
        }
        assert!(is_elf(&me));
        let own = if cfg!(target_arch = "aarch64") {
            crate::arch::EM_AARCH64
        } else {
            crate::arch::EM_X86_64
        };
        assert_eq!(machine(&me), Some(own));
        assert_eq!(machine(b"#!/bin/sh\n"), None);
        // The loader and libraries, as ldd would list them.
        let (interp, needed) = dynamic_needs(&me).unwrap();
        if cfg!(target_feature = "crt-static") {
            assert!(interp.is_none() && needed.is_empty());
        } else {
            assert!(interp.is_some_and(|i| i.starts_with('/') && i.contains("ld-linux")));
            assert!(
                needed.iter().any(|n| n.starts_with("libc.so")),
                "{needed:?}"
            );
        }
        assert_eq!(linking(b"#!/bin/sh\n"), None);
        assert!(!is_elf(b"#!/bin/sh\n"));
        // A header whose program headers lie past the end is not an image.
        let mut bogus = me[..64].to_vec();
        bogus[0x38] = 0xff;
        assert_eq!(linking(&bogus), None);
    }

    #[test]
    fn a_static_pie_has_a_dynamic_section_without_needed_entries() {
        // A minimal ELF64 image: one PT_DYNAMIC header whose section holds
        // DT_FLAGS_1 then DT_NULL, as a static-pie has.
        let mut img = vec![0u8; 0x40 + 56 + 32];
        img[..6].copy_from_slice(b"\x7fELF\x02\x01");
        img[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        img[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        img[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 0x40;
        img[ph..ph + 4].copy_from_slice(&2u32.to_le_bytes()); // PT_DYNAMIC
        img[ph + 8..ph + 16].copy_from_slice(&(0x40u64 + 56).to_le_bytes());
        img[ph + 32..ph + 40].copy_from_slice(&32u64.to_le_bytes());
        let dynamic = 0x40 + 56;
        img[dynamic..dynamic + 8].copy_from_slice(&0x6fff_fffbu64.to_le_bytes());
        assert_eq!(
            linking(&img),
            Some(Linking {
                interp: false,
                needed: 0
            })
        );
        // Turn the first entry into DT_NEEDED: now it needs a library.
        img[dynamic..dynamic + 8].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(linking(&img).map(|l| l.needed), Some(1));
        assert!(!linking(&img).unwrap().is_static());
    }
}
