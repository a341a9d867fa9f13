//! Debian version comparison (deb-version(7)), by the `debversion` crate. A version that
//! crate cannot parse (none should appear in a signed index) sorts by plain string order, so
//! resolution stays deterministic instead of failing.

use std::cmp::Ordering;
use std::str::FromStr;

use debversion::Version;

pub fn compare(a: &str, b: &str) -> Ordering {
    match (Version::from_str(a), Version::from_str(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Whether `have` satisfies `op want` (`>=`, `<=`, `>>`, `<<`, `=`; also `>` and `<` as dpkg
/// still reads them).
pub fn satisfies(have: &str, op: &str, want: &str) -> bool {
    let o = compare(have, want);
    match op {
        ">=" => o != Ordering::Less,
        "<=" => o != Ordering::Greater,
        ">>" | ">" => o == Ordering::Greater,
        "<<" | "<" => o == Ordering::Less,
        "=" => o == Ordering::Equal,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_ordering() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+deb12u1", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("3.0.15-1~deb12u1", "3.0.11-1~deb12u2", Greater),
            ("1:0.9", "2.0", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1.2a", "1.2", Greater),
            ("1.010", "1.9", Greater),
            ("20230311", "20230311+deb12u1", Less),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
        }
        assert!(satisfies("3.0.15-1", ">=", "3.0.0"));
        assert!(!satisfies("2.31-13", ">=", "2.34"));
        assert!(satisfies("1.0", "<<", "1.1"));
    }
}
