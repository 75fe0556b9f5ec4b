//! Module metadata: the `.modinfo` ELF section of `tag=value` strings, as Linux modules carry.
//!
//! C modules write it with `MODULE_INFO(tag, "value")` and the short forms `MODULE_VERSION`,
//! `MODULE_DESCRIPTION`, `MODULE_LICENSE`, `MODULE_AUTHOR`, `MODULE_DEPENDS` from
//! `module_interface.h`; Rust modules with the `kmodlike-module` macro. The loader reads the
//! section from the file with the `object` crate *before* anything is loaded, so dependencies are
//! known before any code runs, and [`modinfo`] runs no module code at all.

/// The `.modinfo` entries of a module file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ModInfo {
    /// `(tag, value)` pairs in the order they appear in the section.
    pub entries: Vec<(String, String)>,
}

impl ModInfo {
    /// The first value of `tag`, if present.
    pub fn get(&self, tag: &str) -> Option<&str> {
        self.entries.iter().find(|(t, _)| t == tag).map(|(_, v)| v.as_str())
    }

    /// Every value of `tag`, in order.
    pub fn all<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(t, _)| t == tag).map(|(_, v)| v.as_str())
    }

    /// The dependencies: every `depends=` entry split on spaces and commas, in order, without
    /// duplicates.
    pub fn depends(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for dep in self.all("depends").flat_map(|v| v.split([' ', ','])).filter(|s| !s.is_empty()) {
            if !out.iter().any(|d| d == dep) {
                out.push(dep.to_owned());
            }
        }
        out
    }

    /// Parse the raw contents of a `.modinfo` section: NUL-separated `tag=value` strings
    /// (padding NULs are skipped; a string without `=` is kept as a tag with an empty value).
    pub fn parse(section: &[u8]) -> ModInfo {
        let entries = section
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = String::from_utf8_lossy(s);
                match s.split_once('=') {
                    Some((t, v)) => (t.trim().to_owned(), v.to_owned()),
                    None => (s.trim().to_owned(), String::new()),
                }
            })
            .collect();
        ModInfo { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tag_value_strings_with_padding() {
        let raw = b"version=1.2\0\0\0description=does things\0depends=misc/a misc/b\0depends=c,a\0";
        let info = ModInfo::parse(raw);
        assert_eq!(info.get("version"), Some("1.2"));
        assert_eq!(info.get("description"), Some("does things"));
        assert_eq!(info.depends(), vec!["misc/a", "misc/b", "c", "a"]);
        assert_eq!(info.get("license"), None);
    }

    #[test]
    fn value_may_contain_equals() {
        let info = ModInfo::parse(b"note=a=b\0");
        assert_eq!(info.get("note"), Some("a=b"));
    }
}
