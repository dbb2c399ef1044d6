//! The classic `kmem/mm_page_alloc` record layout, read from the format file.
//!
//! The layout changed over the years (before 4.1 the record held the `page`
//! pointer, later `pfn`; in 2022 `gfp_flags` grew from 4 to 8 bytes and moved
//! the fields after it), so offsets are never hard-coded.

use thiserror::Error;

/// Errors reading the record layout.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("the mm_page_alloc format file has no `{0}` field")]
    MissingField(&'static str),
    #[error("the mm_page_alloc format file has a malformed field line: {0}")]
    BadLine(String),
}

/// Offsets and sizes of the fields pagefail reads from the classic record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLayout {
    pub page_offset: u32,
    /// The record holds `pfn` (failure: -1) rather than `page` (failure: NULL).
    pub page_is_pfn: bool,
    pub order_offset: u32,
    pub gfp_offset: u32,
    pub gfp_size: u32,
    pub migratetype_offset: u32,
}

impl RecordLayout {
    /// Read the layout from the format file's `field:` lines.
    ///
    /// # Errors
    /// When a needed field is missing or a field line is malformed.
    pub fn from_format(format: &str) -> Result<Self, LayoutError> {
        let mut page = None;
        let mut pfn = None;
        let mut order = None;
        let mut gfp = None;
        let mut migratetype = None;
        for line in format.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';').map(str::trim) {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u32>().ok();
                } else if decl.is_none() && !part.is_empty() && !part.contains(':') {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(LayoutError::BadLine(line.to_owned()));
            };
            let name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or_default();
            match name {
                "page" => page = Some(offset),
                "pfn" => pfn = Some(offset),
                "order" => order = Some(offset),
                "gfp_flags" => gfp = Some((offset, size)),
                "migratetype" => migratetype = Some(offset),
                _ => {}
            }
        }
        let (page_offset, page_is_pfn) = match (pfn, page) {
            (Some(o), _) => (o, true),
            (None, Some(o)) => (o, false),
            (None, None) => return Err(LayoutError::MissingField("pfn")),
        };
        let (gfp_offset, gfp_size) = gfp.ok_or(LayoutError::MissingField("gfp_flags"))?;
        Ok(Self {
            page_offset,
            page_is_pfn,
            order_offset: order.ok_or(LayoutError::MissingField("order"))?,
            gfp_offset,
            gfp_size,
            migratetype_offset: migratetype.ok_or(LayoutError::MissingField("migratetype"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_6_18_layout() {
        let text = include_str!("../../../tests/fixtures/format/mm_page_alloc-6.18.txt");
        assert_eq!(
            RecordLayout::from_format(text),
            Ok(RecordLayout {
                page_offset: 8,
                page_is_pfn: true,
                order_offset: 16,
                gfp_offset: 24,
                gfp_size: 8,
                migratetype_offset: 32,
            })
        );
    }

    #[test]
    fn reads_an_old_layout_with_page_pointer_and_4_byte_gfp() {
        let text = "\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
\tfield:struct page * page;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned int order;\toffset:16;\tsize:4;\tsigned:0;
\tfield:gfp_t gfp_flags;\toffset:20;\tsize:4;\tsigned:0;
\tfield:int migratetype;\toffset:24;\tsize:4;\tsigned:1;
";
        let l = RecordLayout::from_format(text).unwrap();
        assert!(!l.page_is_pfn);
        assert_eq!(
            (
                l.page_offset,
                l.gfp_offset,
                l.gfp_size,
                l.migratetype_offset
            ),
            (8, 20, 4, 24)
        );
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            RecordLayout::from_format(
                "\tfield:unsigned int order;\toffset:16;\tsize:4;\tsigned:0;"
            ),
            Err(LayoutError::MissingField("pfn"))
        );
        assert!(matches!(
            RecordLayout::from_format("\tfield:unsigned int order;\toffset:x;"),
            Err(LayoutError::BadLine(_))
        ));
    }
}
