//! Package version ordering, as each package manager orders its own versions.
//!
//! - `dpkg`: Debian's `[epoch:]upstream[-revision]` ordering (`dpkg --compare-versions`):
//!   the epoch numerically, then upstream and revision by `verrevcmp`, where `~` sorts before
//!   everything, even the end of the string (`1.0~rc1 < 1.0`), letters before other symbols.
//! - `rpm`: `[epoch:]version[-release]`, the epoch numerically, then version and release by
//!   `rpmvercmp` (alternating digit and letter segments, digits newer than letters, `~` older
//!   and `^` newer than the end).
//! - anything else (`apk`, a hand-written import): the `rpm` rules, which order dotted numeric
//!   versions with suffixes the way people expect.

use std::cmp::Ordering;

/// Orders two versions of a package from `source` (`dpkg`, `rpm`, `apk`, ...).
pub fn compare(source: &str, a: &str, b: &str) -> Ordering {
    match source {
        "dpkg" => compare_deb(a, b),
        _ => compare_rpm(a, b),
    }
}

/// Splits `epoch:rest` off a version; no epoch (or one that is not a number) is epoch 0.
fn split_epoch(version: &str) -> (u64, &str) {
    match version.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|c| c.is_ascii_digit()) => {
            (epoch.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, version),
    }
}

/// `dpkg --compare-versions a lt b` and friends.
pub fn compare_deb(a: &str, b: &str) -> Ordering {
    let (epoch_a, rest_a) = split_epoch(a);
    let (epoch_b, rest_b) = split_epoch(b);
    // The revision is what follows the last hyphen; none is the empty revision.
    let (up_a, rev_a) = rest_a.rsplit_once('-').unwrap_or((rest_a, ""));
    let (up_b, rev_b) = rest_b.rsplit_once('-').unwrap_or((rest_b, ""));
    epoch_a
        .cmp(&epoch_b)
        .then_with(|| verrevcmp(up_a.as_bytes(), up_b.as_bytes()))
        .then_with(|| verrevcmp(rev_a.as_bytes(), rev_b.as_bytes()))
}

/// dpkg's weight of a non-digit character: `~` lowest, then the end of the string, letters,
/// and every other character after the letters.
fn deb_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The non-digit prefix, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (deb_order(a.get(i).copied()), deb_order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // The digit run, as a number: skip leading zeros, then the longer run is larger, and
        // runs of one length compare by their first differing digit.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// rpm's EVR comparison: epoch, then version, then release, each by `rpmvercmp`. A side
/// without a release compares equal on the release (as `rpm -q` does for a bare version).
pub fn compare_rpm(a: &str, b: &str) -> Ordering {
    let (epoch_a, rest_a) = split_epoch(a);
    let (epoch_b, rest_b) = split_epoch(b);
    let (ver_a, rel_a) = rest_a.rsplit_once('-').unwrap_or((rest_a, ""));
    let (ver_b, rel_b) = rest_b.rsplit_once('-').unwrap_or((rest_b, ""));
    epoch_a
        .cmp(&epoch_b)
        .then_with(|| rpmvercmp(ver_a.as_bytes(), ver_b.as_bytes()))
        .then_with(|| {
            if rel_a.is_empty() || rel_b.is_empty() {
                Ordering::Equal
            } else {
                rpmvercmp(rel_a.as_bytes(), rel_b.as_bytes())
            }
        })
}

fn rpmvercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    let (mut i, mut j) = (0, 0);
    loop {
        while i < a.len() && separator(a[i]) {
            i += 1;
        }
        while j < b.len() && separator(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        // `~` sorts before everything, the end included.
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // `^` sorts after the end, before anything else.
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca.is_none() || cb.is_none() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let kind = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let seg_a_len = a[i..].iter().take_while(|c| kind(c)).count();
        let seg_b_len = b[j..].iter().take_while(|c| kind(c)).count();
        let (mut seg_a, mut seg_b) = (&a[i..i + seg_a_len], &b[j..j + seg_b_len]);
        i += seg_a_len;
        j += seg_b_len;
        if seg_b.is_empty() {
            // Segments of different kinds: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        if numeric {
            while seg_a.first() == Some(&b'0') {
                seg_a = &seg_a[1..];
            }
            while seg_b.first() == Some(&b'0') {
                seg_b = &seg_b[1..];
            }
            match seg_a.len().cmp(&seg_b.len()) {
                Ordering::Equal => {}
                longer => return longer,
            }
        }
        match seg_a.cmp(seg_b) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn debian_ordering() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0", "1.0+b1", Less),
            ("1:0.9", "2.0", Greater),
            ("3.0.11-1~deb12u2", "3.0.13-1", Less),
            ("3.0.13-1", "3.0.13-1~deb12u1", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0-1", "1.0", Greater),
            ("1.0-0", "1.0", Equal),
            ("2.36-9+deb12u14", "2.36-9+deb12u4", Greater),
            ("1.10", "1.9", Greater),
            ("001", "1", Equal),
            ("1.0.a", "1.0+", Greater),
        ] {
            assert_eq!(compare("dpkg", a, b), want, "{a} vs {b}");
            assert_eq!(compare("dpkg", b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn rpm_ordering() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0.1", Less),
            ("1.0a", "1.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1:3.0.7-28.el9_4", "3.0.13-1", Greater),
            ("3.0.7-28.el9_4", "3.0.7-27.el9", Greater),
            ("5.1.8-9.el9", "5.1.8", Equal),
            ("1.10", "1.9", Greater),
            ("2a", "2.0", Less),
            ("1.2.5-r0", "1.2.5-r1", Less),
        ] {
            assert_eq!(compare("rpm", a, b), want, "{a} vs {b}");
            assert_eq!(compare("rpm", b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
