//! Package version ordering, as each package manager orders its own versions.
//!
//! - `dpkg`: Debian's `[epoch:]upstream[-revision]` ordering (`dpkg --compare-versions`):
//!   the epoch numerically, then upstream and revision by `verrevcmp`, where `~` sorts before
//!   everything, even the end of the string (`1.0~rc1 < 1.0`), letters before other symbols.
//! - `rpm`: `[epoch:]version[-release]`, the epoch numerically, then version and release by
//!   `rpmvercmp` (alternating digit and letter segments, digits newer than letters, `~` older
//!   and `^` newer than the end).
//! - `apk`: Alpine's (apk-tools 2.14 and 3) `number{.number}[letter]{_suffix[number]}[~hash][-rN]`:
//!   dotted numbers (one with a leading zero compares as text, `1.01 < 1.1`), an optional
//!   lowercase letter, suffixes (`_alpha _beta _pre _rc` older than the release,
//!   `_cvs _svn _git _hg _p` newer), a commit hash, then the package revision `-rN`.
//! - anything else (a hand-written import, a source without rules here): the `rpm` rules,
//!   which order dotted numeric versions with suffixes the way people expect.
//!
//! Any two strings compare, malformed versions included: each gets the answer its package
//! manager gives for it (apk, for one, still orders `1.0bc` after `1.0`). Swapping the
//! arguments reverses the answer.

use std::cmp::Ordering;

/// Orders two versions of a package from `source` (`dpkg`, `rpm`, `apk`, ...).
pub fn compare(source: &str, a: &str, b: &str) -> Ordering {
    match source {
        "dpkg" => compare_deb(a, b),
        "apk" => compare_apk(a, b),
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

/// The kinds of parts of an apk version, in the order they may follow each other. Where two
/// versions agree up to a point and then go on with parts of different kinds, the one going
/// on with the earlier kind is the newer (`1.2.1` (a dotted number) is newer than `1.2-r1` (a
/// revision), which is newer than `1.2` (the end)), unless it goes on with a pre-release
/// suffix, which makes it older.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ApkKind {
    /// The leading number.
    First,
    /// A number after a `.`; with a leading zero it compares as text (`1.01 < 1.1`).
    Dotted,
    /// One lowercase letter after the numbers (`1.2a`).
    Letter,
    /// `_alpha`, `_rc`, `_p`, ...
    Suffix,
    /// The number after a suffix (`_rc2`).
    SuffixNumber,
    /// `~` and a commit hash (`1.2~a1b2c3`), compared as text.
    CommitHash,
    /// The package revision after `-r`.
    Revision,
    End,
    /// Something apk does not parse; the comparison stops here.
    Invalid,
}

/// apk's suffixes by weight: the pre-release ones (negative) are older than the release, the
/// others newer.
const APK_SUFFIXES: [(&str, i8); 9] = [
    ("alpha", -4),
    ("beta", -3),
    ("pre", -2),
    ("rc", -1),
    ("cvs", 1),
    ("svn", 2),
    ("git", 3),
    ("hg", 4),
    ("p", 5),
];

#[derive(Debug, Clone, Copy)]
struct ApkToken<'a> {
    kind: ApkKind,
    text: &'a str,
    /// The weight of a `Suffix`.
    weight: i8,
}

impl ApkToken<'_> {
    fn is_pre_release(&self) -> bool {
        self.kind == ApkKind::Suffix && self.weight < 0
    }
}

/// The parts of an apk version, ending with an `End` or `Invalid` one.
fn apk_tokens(version: &str) -> Vec<ApkToken<'_>> {
    let token = |kind, text| ApkToken {
        kind,
        text,
        weight: 0,
    };
    let span = |from: usize, keep: fn(&u8) -> bool| {
        from + version.as_bytes()[from..]
            .iter()
            .take_while(|c| keep(c))
            .count()
    };
    let digits = |from: usize| span(from, u8::is_ascii_digit);

    let mut tokens = Vec::new();
    let end = digits(0);
    let mut previous = if end == 0 {
        token(ApkKind::Invalid, "")
    } else {
        token(ApkKind::First, &version[..end])
    };
    let mut at = end;
    loop {
        tokens.push(previous);
        if previous.kind >= ApkKind::End {
            return tokens;
        }
        let Some(&c) = version.as_bytes().get(at) else {
            previous = token(ApkKind::End, "");
            continue;
        };
        let after_numbers = previous.kind <= ApkKind::Dotted;
        previous = match c {
            b'a'..=b'z' if after_numbers => {
                at += 1;
                token(ApkKind::Letter, &version[at - 1..at])
            }
            b'.' if after_numbers && digits(at + 1) > at + 1 => {
                let end = digits(at + 1);
                let next = token(ApkKind::Dotted, &version[at + 1..end]);
                at = end;
                next
            }
            b'0'..=b'9' if previous.kind == ApkKind::Suffix => {
                let end = digits(at);
                let next = token(ApkKind::SuffixNumber, &version[at..end]);
                at = end;
                next
            }
            b'_' if previous.kind <= ApkKind::SuffixNumber => {
                let end = span(at + 1, u8::is_ascii_lowercase);
                let name = &version[at + 1..end];
                match APK_SUFFIXES.iter().find(|(known, _)| *known == name) {
                    Some(&(_, weight)) => {
                        at = end;
                        ApkToken {
                            kind: ApkKind::Suffix,
                            text: name,
                            weight,
                        }
                    }
                    None => token(ApkKind::Invalid, ""),
                }
            }
            b'~' if previous.kind < ApkKind::CommitHash
                && span(at + 1, u8::is_ascii_hexdigit) > at + 1 =>
            {
                let end = span(at + 1, u8::is_ascii_hexdigit);
                let next = token(ApkKind::CommitHash, &version[at + 1..end]);
                at = end;
                next
            }
            b'-' if previous.kind < ApkKind::Revision
                && version[at..].starts_with("-r")
                && digits(at + 2) > at + 2 =>
            {
                let end = digits(at + 2);
                let next = token(ApkKind::Revision, &version[at + 2..end]);
                at = end;
                next
            }
            _ => token(ApkKind::Invalid, ""),
        };
    }
}

/// Two runs of ASCII digits as the numbers they spell, however long.
fn compare_digits(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// `apk version -t a b`: apk-tools' ordering.
pub fn compare_apk(a: &str, b: &str) -> Ordering {
    let (tokens_a, tokens_b) = (apk_tokens(a), apk_tokens(b));
    for (x, y) in tokens_a.iter().zip(&tokens_b) {
        if x.kind != y.kind {
            return if x.is_pre_release() {
                Ordering::Less
            } else if y.is_pre_release() {
                Ordering::Greater
            } else {
                y.kind.cmp(&x.kind)
            };
        }
        let order = match x.kind {
            ApkKind::End | ApkKind::Invalid => return Ordering::Equal,
            ApkKind::Dotted if x.text.starts_with('0') || y.text.starts_with('0') => {
                x.text.cmp(y.text)
            }
            ApkKind::First | ApkKind::Dotted | ApkKind::SuffixNumber | ApkKind::Revision => {
                compare_digits(x.text, y.text)
            }
            ApkKind::Letter | ApkKind::CommitHash => x.text.cmp(y.text),
            ApkKind::Suffix => x.weight.cmp(&y.weight),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    // Both lists end with an `End` or `Invalid` part, where the loop returned.
    Ordering::Equal
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

    #[test]
    fn apk_ordering() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0.1", Less),
            ("1.2", "1.10", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0b", Less),
            ("2.3.0b-r1", "2.3.0b-r2", Less),
            // Pre-release suffixes are older than the release, in this order.
            ("1.0_alpha", "1.0_beta", Less),
            ("1.0_beta", "1.0_pre", Less),
            ("1.0_pre", "1.0_rc", Less),
            ("1.0_rc1", "1.0_rc2", Less),
            ("1.0_rc2", "1.0", Less),
            ("1.1_alpha1", "1.1", Less),
            ("0.1.0_alpha_pre2", "0.1.0_alpha", Less),
            // Post-release suffixes are newer, in this order.
            ("1.0", "1.0_cvs", Less),
            ("1.0_cvs", "1.0_svn", Less),
            ("1.0_svn", "1.0_git", Less),
            ("1.0_git", "1.0_hg", Less),
            ("1.0_hg", "1.0_p", Less),
            ("1.0_p9", "1.0_p10", Less),
            ("1.8.5", "1.8.5_p2", Less),
            ("1.0_p1", "1.0.1", Less),
            // The revision comes last.
            ("1.2.3-r0", "1.2.3-r1", Less),
            ("1.2.3", "1.2.3-r0", Less),
            ("1.2.3-r9", "1.2.3-r10", Less),
            ("1.2.3-r99", "1.2.4", Less),
            ("1.2~ab12-r0", "1.2~ab13-r0", Less),
            ("1.2", "1.2~ab12", Less),
            ("1.2-r0", "1.2~ab12", Less),
            ("1.2-r1", "1.2.1", Less),
            ("3.1_p16", "3.1_p17", Less),
            ("4.5_p1", "4.5_p1-r1", Less),
            // A number after a dot with leading zeros weighs less than one without.
            ("1.01", "1.1", Less),
            ("1.001", "1.01", Less),
            ("1.07", "1.07.5", Less),
            ("006", "1.06-r6", Greater),
            ("2.10.1", "02.08.01b", Greater),
            // Long runs of digits compare as numbers.
            (
                "1.0.0_pre20191002222144-r0",
                "1.0.0_pre20210530193627-r0",
                Less,
            ),
            ("3.0.13-r0", "3.0.9-r5", Greater),
            // Malformed: compared as far as apk parses them.
            ("1.0", "1.0bc", Less),
            ("23_foo", "4_beta", Greater),
            ("1.0_foo", "1.0_bar", Equal),
            ("1.0-x", "1.0", Less),
            ("1.0.", "1.0", Less),
            ("", "", Equal),
            ("", "1", Less),
        ] {
            assert_eq!(compare("apk", a, b), want, "{a} vs {b}");
            assert_eq!(compare("apk", b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// `compare_deb` against the real `dpkg --compare-versions`, on valid Debian versions made
    /// from a grammar: an optional epoch, an upstream version starting with a digit (hyphens
    /// only when there is a revision, colons only when there is an epoch), an optional
    /// revision. Two versions of a pair share parts often, so that they get close.
    mod against_dpkg {
        use super::*;
        use proptest::prelude::*;
        use std::process::Command;

        /// dpkg's answer, or a panic saying why there is none. A missing dpkg fails the test:
        /// it is on every machine this runs on (Debian CI included), and a skipped comparison
        /// would let `compare_deb` drift unnoticed.
        fn dpkg(a: &str, b: &str) -> Ordering {
            let holds = |op: &str| {
                let output = Command::new("dpkg")
                    .args(["--compare-versions", a, op, b])
                    .output()
                    .unwrap_or_else(|e| {
                        panic!(
                            "cannot run `dpkg --compare-versions` ({e}); this test checks \
                             compare_deb against the real dpkg: install dpkg \
                             (apt-get install dpkg)"
                        )
                    });
                assert!(
                    output.stderr.is_empty(),
                    "dpkg complained about {a:?} or {b:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                match output.status.code() {
                    Some(0) => true,
                    Some(1) => false,
                    other => panic!("dpkg --compare-versions {a} {op} {b} exited with {other:?}"),
                }
            };
            if holds("lt") {
                Less
            } else if holds("eq") {
                Equal
            } else {
                Greater
            }
        }

        /// Characters of an upstream version or revision, weighted towards the interesting
        /// ones: `~`, `+`, `.`, zeros and letters on both sides of the digit/letter boundary.
        fn text(extra: &'static str, max: usize) -> impl Strategy<Value = String> {
            let alphabet: Vec<char> = format!("0019aZz~~+..{extra}").chars().collect();
            proptest::collection::vec(proptest::sample::select(alphabet), 0..max)
                .prop_map(|chars| chars.into_iter().collect())
        }

        #[derive(Debug, Clone)]
        struct Version {
            epoch: Option<String>,
            upstream: String,
            revision: Option<String>,
        }

        impl Version {
            fn render(&self) -> String {
                let mut text = String::new();
                if let Some(epoch) = &self.epoch {
                    text.push_str(epoch);
                    text.push(':');
                }
                text.push_str(&self.upstream);
                if let Some(revision) = &self.revision {
                    text.push('-');
                    text.push_str(revision);
                }
                text
            }
        }

        fn version() -> impl Strategy<Value = Version> {
            let epoch = proptest::option::weighted(
                0.3,
                prop_oneof![Just("0"), Just("1"), Just("01"), Just("2")].prop_map(String::from),
            );
            let revision = proptest::option::weighted(
                0.6,
                (prop_oneof![Just('0'), Just('1'), Just('9')], text("", 6))
                    .prop_map(|(first, rest)| format!("{first}{rest}")),
            );
            (
                epoch,
                prop_oneof![Just('0'), Just('1'), Just('3'), Just('9')],
                text("-:", 10),
                revision,
            )
                .prop_map(|(epoch, first, rest, revision)| {
                    // A hyphen needs a revision after it and a colon an epoch before it.
                    let rest: String = rest
                        .chars()
                        .filter(|&c| {
                            (c != '-' || revision.is_some()) && (c != ':' || epoch.is_some())
                        })
                        .collect();
                    Version {
                        epoch,
                        upstream: format!("{first}{rest}"),
                        revision,
                    }
                })
        }

        /// Two versions that share each part with some chance, and sometimes an upstream
        /// version that only grew at its end.
        fn pair() -> impl Strategy<Value = (String, String)> {
            (version(), version(), any::<[bool; 4]>(), text("", 3)).prop_map(
                |(a, mut b, [epoch, upstream, revision, grow], tail)| {
                    if epoch {
                        b.epoch = a.epoch.clone();
                    }
                    if upstream {
                        b.upstream = a.upstream.clone();
                        if grow {
                            b.upstream.push_str(&tail);
                        }
                    }
                    if revision {
                        b.revision = a.revision.clone();
                    }
                    if b.epoch.is_none() {
                        b.upstream.retain(|c| c != ':');
                    }
                    if b.revision.is_none() {
                        b.upstream.retain(|c| c != '-');
                    }
                    (a.render(), b.render())
                },
            )
        }

        #[test]
        fn compare_deb_agrees_with_dpkg() {
            // Once, before the cases: a missing dpkg is one clear failure, not a shrinking run.
            assert_eq!(dpkg("1.0", "1.0~rc1"), Greater);
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(400));
            let result = runner.run(&pair(), |(a, b)| {
                prop_assert_eq!(compare_deb(&a, &b), dpkg(&a, &b), "{} vs {}", a, b);
                Ok(())
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        }
    }
}
