//! `.modinfo` entries built at compile time, byte for byte what the C macro
//! `MODULE_INFO(tag, "value")` emits: `tag=value` and a NUL, in a section named `.modinfo`,
//! alignment 1 (so entries pack with no padding between them).

/// `tag=value\0` as a byte array; `N` must be `tag.len() + value.len() + 2`.
///
/// Evaluated in a `static` initialiser, so a bad entry fails the build with the message below
/// rather than producing a section the loader would misread.
pub const fn modinfo_entry<const N: usize>(tag: &str, value: &str) -> [u8; N] {
    let (tag, value) = (tag.as_bytes(), value.as_bytes());
    assert!(N == tag.len() + value.len() + 2, "modinfo entry: wrong array length");
    assert!(!tag.is_empty(), "a .modinfo tag cannot be empty");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < tag.len() {
        assert!(tag[i] != b'=' && tag[i] != 0, "a .modinfo tag cannot contain '=' or NUL");
        out[i] = tag[i];
        i += 1;
    }
    out[i] = b'=';
    let mut j = 0;
    while j < value.len() {
        assert!(value[j] != 0, "a .modinfo value cannot contain a NUL byte");
        out[i + 1 + j] = value[j];
        j += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_tag_equals_value_nul() {
        let entry: [u8; 12] = modinfo_entry("license", "MIT");
        assert_eq!(&entry, b"license=MIT\0");
        let empty: [u8; 9] = modinfo_entry("depends", "");
        assert_eq!(&empty, b"depends=\0");
    }

    #[test]
    #[should_panic(expected = "cannot contain a NUL")]
    fn a_nul_in_the_value_is_refused() {
        let _: [u8; 7] = modinfo_entry("a", "b\0cd");
    }
}
