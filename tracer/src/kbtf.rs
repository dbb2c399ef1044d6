//! The few facts pagefail reads from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`): byte offsets of struct members and values of
//! enum constants, so the kernel program can follow a pointer chain at the
//! running kernel's own layout (aya-ebpf has no CO-RE relocations).
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>. Only the type section is
//! walked; types are looked up by name, first match.

use std::{collections::HashMap, fmt};

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// What can go wrong reading BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfError(pub String);

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BtfError {}

fn err<T>(msg: impl Into<String>) -> Result<T, BtfError> {
    Err(BtfError(msg.into()))
}

#[derive(Debug, Clone, Copy)]
struct Type {
    kind: u32,
    kind_flag: bool,
    vlen: u32,
    size_or_id: u32,
    /// Byte offset of the kind-specific data after the common header.
    extra: usize,
}

/// A parsed BTF blob (little- or native-endian, as the kernel writes it).
pub struct KernelBtf {
    data: Vec<u8>,
    strings_at: usize,
    strings_len: usize,
    /// Index 0 is the void type.
    types: Vec<Type>,
    by_name: HashMap<(u32, u32), u32>,
}

impl fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KernelBtf({} types)", self.types.len())
    }
}

impl KernelBtf {
    /// Read and parse `/sys/kernel/btf/vmlinux`.
    ///
    /// # Errors
    /// When the file is missing or malformed.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| BtfError(format!("{path}: {e}")))?;
        Self::parse(data)
    }

    /// Parse a BTF blob.
    ///
    /// # Errors
    /// When it is truncated or not BTF.
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let u16_at =
            |d: &[u8], at: usize| d.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        if u16_at(&data, 0) != Some(MAGIC) {
            return err("not BTF (bad magic)");
        }
        let hdr =
            |at: usize| read_u32(&data, at).ok_or_else(|| BtfError("truncated header".into()));
        let hdr_len = hdr(4)? as usize;
        let type_off = hdr(8)? as usize;
        let type_len = hdr(12)? as usize;
        let str_off = hdr(16)? as usize;
        let str_len = hdr(20)? as usize;
        let types_at = hdr_len + type_off;
        let strings_at = hdr_len + str_off;
        if data.len() < types_at + type_len || data.len() < strings_at + str_len {
            return err("truncated sections");
        }
        let mut types = vec![Type {
            kind: 0,
            kind_flag: false,
            vlen: 0,
            size_or_id: 0,
            extra: 0,
        }];
        let mut by_name = HashMap::new();
        let mut at = types_at;
        let end = types_at + type_len;
        while at < end {
            let (Some(name_off), Some(info), Some(size_or_id)) = (
                read_u32(&data, at),
                read_u32(&data, at + 4),
                read_u32(&data, at + 8),
            ) else {
                return err("truncated type");
            };
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = at + 12;
            let more = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                KIND_STRUCT | KIND_UNION | 15 | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | 13 => 8 * vlen as usize,
                2 | 7..=12 | 16 | 18 => 0,
                k => return err(format!("unknown BTF kind {k}")),
            };
            let id = u32::try_from(types.len()).map_err(|_| BtfError("too many types".into()))?;
            if name_off != 0 {
                by_name.entry((kind, name_off)).or_insert(id);
            }
            types.push(Type {
                kind,
                kind_flag: info >> 31 != 0,
                vlen,
                size_or_id,
                extra,
            });
            at = extra + more;
        }
        Ok(Self {
            data,
            strings_at,
            strings_len: str_len,
            types,
            by_name,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = self.strings_at + off as usize;
        let end = self.strings_at + self.strings_len;
        let s = self.data.get(start..end).unwrap_or_default();
        let n = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        &s[..n]
    }

    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        // Names are interned in the string section; find the offset first.
        let strings = self
            .data
            .get(self.strings_at..self.strings_at + self.strings_len)?;
        let mut off = 0usize;
        for s in strings.split(|&b| b == 0) {
            if s == name.as_bytes()
                && let Some(id) = u32::try_from(off)
                    .ok()
                    .and_then(|o| self.by_name.get(&(kind, o)))
            {
                return Some(*id);
            }
            off += s.len() + 1;
        }
        None
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Skip typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_id;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset and type id of `member` in struct or union `id`, looking
    /// through anonymous struct and union members.
    fn member_in(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32)> {
        let t = self.resolve(id)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for i in 0..t.vlen as usize {
            let at = t.extra + 12 * i;
            let (name_off, mtype, raw) = (
                read_u32(&self.data, at)?,
                read_u32(&self.data, at + 4)?,
                read_u32(&self.data, at + 8)?,
            );
            let bits = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            if bits % 8 != 0 {
                continue;
            }
            let bytes = bits / 8;
            if name_off == 0 {
                if let Some((o, ty)) = self.member_in(mtype, member, depth + 1) {
                    return Some((bytes + o, ty));
                }
            } else if self.name(name_off) == member.as_bytes() {
                return Some((bytes, mtype));
            }
        }
        None
    }

    /// Byte offset of `member` in `struct name`, and its type's id.
    ///
    /// # Errors
    /// When the struct or the member is not in this BTF.
    pub fn member(&self, name: &str, member: &str) -> Result<(u32, u32), BtfError> {
        let id = self
            .find(KIND_STRUCT, name)
            .ok_or_else(|| BtfError(format!("no struct {name}")))?;
        self.member_in(id, member, 0)
            .ok_or_else(|| BtfError(format!("no member {name}.{member}")))
    }

    /// Size in bytes of type `id` when it is an integer (through typedefs).
    #[must_use]
    pub fn int_size(&self, id: u32) -> Option<u32> {
        let t = self.resolve(id)?;
        (t.kind == KIND_INT).then_some(t.size_or_id)
    }

    /// The value of enum constant `constant` (any enum).
    ///
    /// # Errors
    /// When no enum of this BTF has it.
    pub fn enum_value(&self, constant: &str) -> Result<i64, BtfError> {
        for t in &self.types {
            if t.kind != KIND_ENUM {
                continue;
            }
            for i in 0..t.vlen as usize {
                let at = t.extra + 8 * i;
                let (Some(name_off), Some(val)) =
                    (read_u32(&self.data, at), read_u32(&self.data, at + 4))
                else {
                    break;
                };
                if self.name(name_off) == constant.as_bytes() {
                    return Ok(i64::from(val.cast_signed()));
                }
            }
        }
        err(format!("no enum constant {constant}"))
    }

    /// Number of types (for messages and tests).
    #[must_use]
    pub fn len(&self) -> usize {
        self.types.len() - 1
    }

    /// Whether it holds no type.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn read_u32(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built blob: `struct s { int a; union { long b; }; }`, `enum e { X = 7 }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0e\0X\0long\0";
        let off = |name: &[u8]| -> u32 {
            let pos = strings
                .windows(name.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=name.len()] == name && w[name.len() + 1] == 0)
                .unwrap();
            u32::try_from(pos + 1).unwrap()
        };
        let mut t = Vec::new();
        let mut push = |v: &[u32]| {
            for x in v {
                t.extend_from_slice(&x.to_ne_bytes());
            }
        };
        // 1: int (4 bytes)
        push(&[off(b"int"), KIND_INT << 24, 4, 32]);
        // 2: long (8 bytes)
        push(&[off(b"long"), KIND_INT << 24, 8, 64]);
        // 3: anonymous union { long b; }
        push(&[0, (KIND_UNION << 24) | 1, 8, off(b"b"), 2, 0]);
        // 4: struct s { int a; union; } at offsets 0 and 64 bits
        push(&[
            off(b"s"),
            (KIND_STRUCT << 24) | 2,
            16,
            off(b"a"),
            1,
            0,
            0,
            3,
            64,
        ]);
        // 5: typedef to long
        push(&[off(b"long"), KIND_TYPEDEF << 24, 2]);
        // 6: enum e { X = 7 }
        push(&[off(b"e"), (KIND_ENUM << 24) | 1, 4, off(b"X"), 7]);
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_ne_bytes());
        d.extend_from_slice(&[1, 0]);
        for x in [
            24u32,
            0,
            u32::try_from(t.len()).unwrap(),
            u32::try_from(t.len()).unwrap(),
            u32::try_from(strings.len()).unwrap(),
        ] {
            d.extend_from_slice(&x.to_ne_bytes());
        }
        d.extend_from_slice(&t);
        d.extend_from_slice(strings);
        d
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_enum_values() {
        let b = KernelBtf::parse(blob()).unwrap();
        assert_eq!(b.len(), 6);
        assert_eq!(b.member("s", "a").unwrap(), (0, 1));
        let (off, ty) = b.member("s", "b").unwrap();
        assert_eq!(off, 8);
        assert_eq!(b.int_size(ty), Some(8));
        assert_eq!(b.int_size(5), Some(8));
        assert_eq!(b.enum_value("X").unwrap(), 7);
        assert!(b.member("s", "c").is_err());
        assert!(b.member("t", "a").is_err());
        assert!(b.enum_value("Y").is_err());
    }

    #[test]
    fn rejects_bad_and_truncated_blobs() {
        assert!(KernelBtf::parse(vec![0; 30]).is_err());
        let mut b = blob();
        b.truncate(40);
        assert!(KernelBtf::parse(b).is_err());
    }

    #[test]
    fn reads_the_running_kernels_task_struct() {
        // Every kernel pagefail runs on (5.8+) with BTF has these.
        let Ok(b) = KernelBtf::from_sys_fs() else {
            return;
        };
        assert!(b.member("task_struct", "pid").is_ok());
        assert!(b.enum_value("memory_cgrp_id").is_ok_and(|v| v >= 0));
    }
}
