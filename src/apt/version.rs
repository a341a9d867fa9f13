//! Debian version comparison (deb-version(7)): `[epoch:]upstream[-revision]`, where `~` sorts
//! before everything, even the end of the string, and digits compare as numbers.

use std::cmp::Ordering;

fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) && !e.is_empty() => {
            (e.parse().unwrap_or(0), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) => (epoch, up, rev),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<char>) -> i32 {
    match c {
        None => 0,
        Some('~') => -1,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() || !b.is_empty() {
        // Non-digit prefix, character by character.
        let na = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
        let nb = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
        let (pa, pb) = (&a[..na], &b[..nb]);
        let (mut ca, mut cb) = (pa.chars(), pb.chars());
        loop {
            let (x, y) = (ca.next(), cb.next());
            if x.is_none() && y.is_none() {
                break;
            }
            match order(x).cmp(&order(y)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        a = &a[na..];
        b = &b[nb..];
        // Digit run, as numbers.
        let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
        let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
        let ia = a[..da].trim_start_matches('0');
        let ib = b[..db].trim_start_matches('0');
        match ia.len().cmp(&ib.len()).then_with(|| ia.cmp(ib)) {
            Ordering::Equal => {}
            o => return o,
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
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
