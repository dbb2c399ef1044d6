//! Kernel versions: the one parse of a release string (`uname -r`, the
//! `Not tainted 4.9.0-8-amd64 #1` of a report, `--kernel`), used by the
//! attach-style support table ([`crate::probe`]) and the gfp eras
//! ([`crate::gfp::versions`]).

use std::fmt;

/// A kernel version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Parse the leading `major.minor[.patch]` of a release string:
    /// `6.12.117+deb13-cloud-amd64`, `2.6.32-5-amd64`, `3.4.2-1-amd64`,
    /// `4.4.0-21-generic`, `6.1.0-rc3`, `6.12-rc1` (patch 0), `v6.1`.
    /// The patch is taken only after a `.`: `6.1-42` is 6.1.0, not 6.1.42.
    /// `None` when the string does not start with `digits.digits` or a
    /// number does not fit.
    #[must_use]
    pub fn parse(release: &str) -> Option<Self> {
        let s = release.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = [0u32; 3];
        let mut count = 0;
        for piece in s.split('.').take(3) {
            let end = piece
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(piece.len());
            let digits = &piece[..end];
            if digits.is_empty() {
                break;
            }
            parts[count] = digits.parse().ok()?;
            count += 1;
            if end != piece.len() {
                break;
            }
        }
        (count >= 2).then_some(Self(parts[0], parts[1], parts[2]))
    }

    /// Whether this version is at least `major.minor`.
    #[must_use]
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.0, self.1) >= (major, minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::KernelVersion;

    fn v(release: &str) -> Option<(u32, u32, u32)> {
        KernelVersion::parse(release).map(|k| (k.0, k.1, k.2))
    }

    #[test]
    fn parses_release_strings_of_every_distribution() {
        assert_eq!(v("6.12.117+deb13-cloud-amd64"), Some((6, 12, 117)));
        assert_eq!(v("2.6.32-5-amd64"), Some((2, 6, 32)));
        assert_eq!(v("2.6.32-754.el6.x86_64"), Some((2, 6, 32)));
        assert_eq!(v("3.4.2-1-amd64"), Some((3, 4, 2)));
        assert_eq!(v("5.10.0-43-cloud-amd64"), Some((5, 10, 0)));
        assert_eq!(v("4.4.0-21-generic"), Some((4, 4, 0)));
        assert_eq!(v("6.1.0-rc3"), Some((6, 1, 0)));
        assert_eq!(v("6.1.0-56-cloud-amd64"), Some((6, 1, 0)));
        assert_eq!(v("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(v("6.12-rc1"), Some((6, 12, 0)));
        assert_eq!(v("6.1-42"), Some((6, 1, 0)));
        assert_eq!(v("5.4"), Some((5, 4, 0)));
        assert_eq!(v(" v6.1.2\n"), Some((6, 1, 2)));
    }

    #[test]
    fn rejects_what_is_not_a_version() {
        for bad in [
            "",
            "garbage",
            "#1",
            "6",
            "6.",
            ".1",
            "6..1",
            "99999999999.1",
            "v",
        ] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn compares_by_major_then_minor() {
        let k = KernelVersion::parse("5.10.0-43-cloud-amd64").unwrap();
        assert!(k.at_least(5, 8) && k.at_least(5, 10) && !k.at_least(5, 11));
        assert!(!k.at_least(6, 0));
        assert!(KernelVersion(4, 19, 0) < KernelVersion(5, 1, 0));
        assert_eq!(k.to_string(), "5.10.0");
    }
}
