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
