//! Spec resolution: a path, or `[namespace/[dirspace/]]name` searched along the module path,
//! after illumos `ddi_modopen(9F)`.
//!
//! * A spec containing `/` that names an existing file is that file.
//! * A spec starting with `/` that names nothing is a missing path (`NotFound`).
//! * Anything else is `[namespace/[dirspace/]]name` (namespace defaults to `misc`), looked for as
//!   `<dir>/<namespace>/[<dirspace>/]<name>.so` in each directory of the module path in turn.
//!   Segments may not be empty, `.` or `..`, so a name never escapes the module path.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable holding extra module directories, `:`-separated.
pub const MODULE_PATH_ENV: &str = "KMODLIKE_MODULE_PATH";

/// The namespace a bare name is looked up in.
pub const DEFAULT_NAMESPACE: &str = "misc";

/// The built-in module directories, searched after the configured ones and
/// `KMODLIKE_MODULE_PATH`: `<exe dir>/../lib/kmodlike/modules`, `/usr/local/lib/kmodlike/modules`,
/// `/usr/lib/kmodlike/modules`.
pub fn default_module_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_owned))
    {
        dirs.push(exe_dir.join("../lib/kmodlike/modules"));
    }
    dirs.push(PathBuf::from("/usr/local/lib/kmodlike/modules"));
    dirs.push(PathBuf::from("/usr/lib/kmodlike/modules"));
    dirs
}

/// The full search list: `configured`, then `KMODLIKE_MODULE_PATH`, then the defaults, without
/// duplicates.
pub fn search_path(configured: &[PathBuf]) -> Vec<PathBuf> {
    let env: Vec<PathBuf> = std::env::var_os(MODULE_PATH_ENV)
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    for d in configured.iter().cloned().chain(env).chain(default_module_path()) {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// A parsed `[namespace/[dirspace/]]name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSpec {
    /// `misc` unless given.
    pub namespace: String,
    /// The optional middle directory.
    pub dirspace: Option<String>,
    /// The module's name (without `.so`).
    pub name: String,
}

impl NameSpec {
    /// Parse and validate a name spec.
    pub fn parse(spec: &str) -> Result<NameSpec> {
        let segments: Vec<&str> = spec.split('/').collect();
        if segments.len() > 3 {
            return Err(Error::InvalidArgument(format!(
                "module spec {spec:?} has {} segments; a name is [namespace/[dirspace/]]name",
                segments.len()
            )));
        }
        for seg in &segments {
            let why = match *seg {
                "" if spec.starts_with('/') => Some("an absolute path that does not exist"),
                "" => Some("an empty segment"),
                "." | ".." => Some("a '.' or '..' segment, which would leave the module path"),
                s if s.contains('\0') => Some("a NUL byte"),
                _ => None,
            };
            if let Some(why) = why {
                return Err(Error::InvalidArgument(format!(
                    "module spec {spec:?} is not a valid [namespace/[dirspace/]]name: it has {why}"
                )));
            }
        }
        let name = segments[segments.len() - 1];
        let name = name.strip_suffix(".so").unwrap_or(name).to_owned();
        if name.is_empty() {
            return Err(Error::InvalidArgument(format!("module spec {spec:?} has an empty name")));
        }
        let (namespace, dirspace) = match segments.len() {
            1 => (DEFAULT_NAMESPACE.to_owned(), None),
            2 => (segments[0].to_owned(), None),
            _ => (segments[0].to_owned(), Some(segments[1].to_owned())),
        };
        Ok(NameSpec { namespace, dirspace, name })
    }

    /// The file this name would be in below a module directory.
    pub fn relative_file(&self) -> PathBuf {
        let mut p = PathBuf::from(&self.namespace);
        if let Some(d) = &self.dirspace {
            p.push(d);
        }
        p.push(format!("{}.so", self.name));
        p
    }
}

/// Resolve `spec` to a file, searching `dirs` for names.
pub fn resolve_spec(spec: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    let path = resolve_spec_with(spec, || dirs.to_vec())?;
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(Error::NotFound { spec: spec.to_owned(), tried: vec![path] });
    }
    Ok(path)
}

/// [`resolve_spec`], computing the search directories only when `spec` is a name (the module
/// path reads the environment and the running program's location). An absolute path is
/// returned as it is, whether it exists or not: the loader's open says.
pub(crate) fn resolve_spec_with(
    spec: &str,
    dirs: impl FnOnce() -> Vec<PathBuf>,
) -> Result<PathBuf> {
    if spec.is_empty() {
        return Err(Error::InvalidArgument("empty module spec or path".into()));
    }
    // An absolute path is only ever a path: opening it says whether it exists (no stat here,
    // which would be a system call more per load). A relative one with a slash may be a path
    // or a `namespace/name` spec: a file there wins.
    if spec.starts_with('/') || (spec.contains('/') && std::fs::symlink_metadata(spec).is_ok()) {
        return Ok(PathBuf::from(spec));
    }
    let name = NameSpec::parse(spec)?;
    let rel = name.relative_file();
    let dirs = dirs();
    let mut tried = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let candidate = dir.join(&rel);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    Err(Error::NotFound { spec: spec.to_owned(), tried })
}

/// The module name a file is known by: its file name up to `.so` (`/x/misc/hello.so` -> `hello`).
pub fn module_name_for(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
    match file.find(".so") {
        Some(i) if i > 0 => file[..i].to_owned(),
        _ => file.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_name_defaults_to_misc() {
        let n = NameSpec::parse("dltest").unwrap();
        assert_eq!(n.relative_file(), PathBuf::from("misc/dltest.so"));
    }

    #[test]
    fn namespace_and_dirspace() {
        assert_eq!(NameSpec::parse("drv/x").unwrap().relative_file(), PathBuf::from("drv/x.so"));
        assert_eq!(
            NameSpec::parse("drv/net/x.so").unwrap().relative_file(),
            PathBuf::from("drv/net/x.so")
        );
    }

    #[test]
    fn escaping_names_are_invalid() {
        for bad in ["../x", "misc/../x", "a//b", "misc/", "./x", "a/b/c/d", "misc/.."] {
            let e = NameSpec::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn not_found_lists_every_place_tried() {
        let dirs = vec![PathBuf::from("/nonexistent/a"), PathBuf::from("/nonexistent/b")];
        match resolve_spec("net/foo", &dirs).unwrap_err() {
            Error::NotFound { tried, .. } => assert_eq!(
                tried,
                vec![
                    PathBuf::from("/nonexistent/a/net/foo.so"),
                    PathBuf::from("/nonexistent/b/net/foo.so")
                ]
            ),
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn finds_a_name_in_the_second_directory() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("misc")).unwrap();
        std::fs::write(b.path().join("misc/m.so"), b"").unwrap();
        let got = resolve_spec("m", &[a.path().into(), b.path().into()]).unwrap();
        assert_eq!(got, b.path().join("misc/m.so"));
    }

    #[test]
    fn missing_absolute_path_is_not_found() {
        assert!(matches!(resolve_spec("/no/such.so", &[]), Err(Error::NotFound { .. })));
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(module_name_for(Path::new("/a/misc/hello.so")), "hello");
        assert_eq!(module_name_for(Path::new("libfoo.so.1")), "libfoo");
        assert_eq!(module_name_for(Path::new("plain")), "plain");
    }
}
