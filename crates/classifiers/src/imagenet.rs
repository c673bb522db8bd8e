//! The 1000 ImageNet-1k class names, in the order of torchvision's (and timm's) classifier
//! outputs, shipped inside the crate (as candle-examples does): no asset to fetch.
//!
//! `imagenet_classes.txt` holds one name per line: torchvision's `_IMAGENET_CATEGORIES`
//! (`torchvision/models/_meta.py` of torchvision 0.26.0, written out by
//! `scripts/fetch-assets.sh`). Duplicated WordNet names are disambiguated as torchvision does
//! (`crane` the machine at 517, `crane bird` at 134).
//!
//! ```
//! use deeprecog_classifiers::IMAGENET_CLASSES;
//!
//! assert_eq!(IMAGENET_CLASSES.len(), 1000);
//! assert_eq!(IMAGENET_CLASSES[0], "tench");
//! assert_eq!(IMAGENET_CLASSES[999], "toilet tissue");
//! ```

/// The class list file, one name per line.
const RAW: &str = include_str!("imagenet_classes.txt");

/// The ImageNet-1k class names: `IMAGENET_CLASSES[i]` is the label of logit `i` of a
/// torchvision / timm ImageNet classifier.
pub const IMAGENET_CLASSES: [&str; 1000] = split_lines(RAW);

/// Number of newline-terminated lines of `text` (a last line without `\n` counts too).
const fn count_lines(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            n += 1;
        }
        i += 1;
    }
    if !bytes.is_empty() && bytes[bytes.len() - 1] != b'\n' {
        n += 1;
    }
    n
}

/// The file must hold exactly 1000 lines: checked when the crate compiles.
const _: () = assert!(count_lines(RAW) == 1000, "imagenet_classes.txt must hold 1000 lines");

/// The first `N` lines of `text`, without their `\n` (or `\r\n`); `""` for missing lines.
const fn split_lines<const N: usize>(text: &'static str) -> [&'static str; N] {
    let mut out = [""; N];
    let mut rest = text.as_bytes();
    let mut k = 0;
    while k < N && !rest.is_empty() {
        let mut end = 0;
        while end < rest.len() && rest[end] != b'\n' {
            end += 1;
        }
        let (line, tail) = rest.split_at(end);
        let line = match line.split_last() {
            Some((b'\r', init)) => init,
            _ => line,
        };
        // Splitting an ASCII byte (`\n`, `\r`) never cuts a UTF-8 sequence.
        if let Ok(s) = core::str::from_utf8(line) {
            out[k] = s;
        }
        rest = match tail.split_first() {
            Some((_, after)) => after,
            None => tail,
        };
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_there_in_torchvision_order() {
        assert!(IMAGENET_CLASSES.iter().all(|n| !n.is_empty() && n.trim() == *n));
        assert_eq!(IMAGENET_CLASSES[1], "goldfish");
        assert_eq!(IMAGENET_CLASSES[134], "crane bird");
        assert_eq!(IMAGENET_CLASSES[517], "crane");
        // Grace Hopper's golden test class and the astronaut's top class.
        assert_eq!(IMAGENET_CLASSES[652], "military uniform");
        let unique: std::collections::BTreeSet<_> = IMAGENET_CLASSES.iter().collect();
        assert_eq!(unique.len(), 1000);
    }

    #[test]
    fn split_lines_handles_crlf_and_a_missing_last_newline() {
        const L: [&str; 3] = split_lines("a\r\nb\nc");
        assert_eq!(L, ["a", "b", "c"]);
        assert_eq!(count_lines("a\r\nb\nc"), 3);
        assert_eq!(count_lines("a\n"), 1);
    }
}
