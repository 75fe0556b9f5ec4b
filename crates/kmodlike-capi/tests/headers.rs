//! The committed headers are exactly what cbindgen generates from the crate, and they compile.
//!
//! `UPDATE_HEADERS=1 cargo test -p kmodlike-capi --test headers` rewrites them.

use std::path::PathBuf;
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(name: &str) -> cbindgen::Config {
    cbindgen::Config::from_file(crate_dir().join(name))
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// `module_loader.h`, from the whole crate.
fn generate_loader_header() -> String {
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir())
        .with_config(config("cbindgen.toml"))
        .generate()
        .expect("cbindgen: module_loader.h");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

/// `module_interface.h`, from `src/interface.rs` alone.
fn generate_interface_header() -> String {
    let bindings = cbindgen::Builder::new()
        .with_src(crate_dir().join("src/interface.rs"))
        .with_config(config("cbindgen-interface.toml"))
        .generate()
        .expect("cbindgen: module_interface.h");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

/// Compare `generated` with the committed file, or rewrite it under `UPDATE_HEADERS=1`.
fn check_or_update(name: &str, generated: &str) {
    let path = crate_dir().join("include").join(name);
    if std::env::var_os("UPDATE_HEADERS").is_some() {
        std::fs::write(&path, generated).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        eprintln!("rewrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        let line = |text: &str| text.lines().nth(first_diff).unwrap_or("<end of file>").to_owned();
        panic!(
            "include/{name} is out of date with the Rust sources (first difference at line {}):\n\
             committed: {}\n\
             generated: {}\n\
             regenerate it with: UPDATE_HEADERS=1 cargo test -p kmodlike-capi --test headers\n\
             and commit the result",
            first_diff + 1,
            line(&committed),
            line(generated)
        );
    }
}

#[test]
fn headers_are_current() {
    check_or_update("module_interface.h", &generate_interface_header());
    check_or_update("module_loader.h", &generate_loader_header());
}

/// Compile a C translation unit made of `source` against the committed headers.
fn compile_c(what: &str, compiler: &str, lang_flags: &[&str], source: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("unit.c");
    std::fs::write(&src, source).expect("write source");
    let include = crate_dir().join("include");
    let out = Command::new(compiler)
        .args(lang_flags)
        .args(["-Wall", "-Wextra", "-Werror", "-fsyntax-only"])
        .arg(format!("-I{}", include.display()))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{what}: the headers do not compile with {compiler} {lang_flags:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn headers_compile_in_either_order_in_c99_c11_and_cpp() {
    let uses = "int main(void) {\n\
        module_init_args_t a = {MODULE_INIT_ARGS_VERSION_CURRENT, 0, 0, 0};\n\
        struct module_init_args *tagged = &a;\n\
        module_error_t e = MODULE_ERR_SUCCESS;\n\
        module_loader_t *l = module_loader_create();\n\
        (void)tagged; (void)e; (void)l;\n\
        return (int)MODULE_INTERFACE_VERSION_CURRENT == 0x10001 ? 0 : 1;\n}\n";
    let orders = [
        ("loader first", "#include \"module_loader.h\"\n#include \"module_interface.h\"\n"),
        ("interface first", "#include \"module_interface.h\"\n#include \"module_loader.h\"\n"),
        ("loader alone", "#include \"module_loader.h\"\n"),
    ];
    for (what, includes) in orders {
        let src = format!("{includes}{uses}");
        compile_c(what, "cc", &["-x", "c", "-std=c99", "-pedantic"], &src);
        compile_c(what, "cc", &["-x", "c", "-std=c11", "-pedantic"], &src);
        if Command::new("c++").arg("--version").output().is_ok() {
            compile_c(what, "c++", &["-x", "c++", "-std=c++11"], &src);
        }
    }
    // A module needs only module_interface.h; the MODULE_INFO macros expand at file scope.
    let module = "#include \"module_interface.h\"\n\
        MODULE_VERSION(\"1.0\");\nMODULE_DESCRIPTION(\"d\");\nMODULE_LICENSE(\"MIT\");\n\
        MODULE_AUTHOR(\"a\");\nMODULE_DEPENDS(\"misc/x\");\nMODULE_INFO(custom, \"v\");\n\
        uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }\n\
        int module_init(const void *init_args) { return init_args ? 0 : 1; }\n\
        void module_fini(void) {}\n";
    compile_c("module", "cc", &["-x", "c", "-std=gnu99"], module);
}

#[test]
fn header_documents_every_exported_call() {
    let header = std::fs::read_to_string(crate_dir().join("include/module_loader.h")).unwrap();
    let lib = std::fs::read_to_string(crate_dir().join("src/lib.rs")).unwrap();
    // The calls listed in the crate's table (src/lib.rs).
    let listed: Vec<&str> = lib
        .split('`')
        .filter(|w| w.starts_with("module_loader_") && !w.ends_with("_t"))
        .filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    // The functions the header declares: a line at column 0 with `name(`, not a typedef.
    let lines: Vec<&str> = header.lines().collect();
    let mut declared = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let starts_decl = line.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !starts_decl || line.starts_with("typedef") || !line.contains('(') {
            continue;
        }
        let head = &line[..line.find('(').unwrap()];
        let name = head.rsplit([' ', '*']).next().unwrap();
        assert!(
            name.starts_with("module_loader_"),
            "a declaration not named module_loader_*: {line}"
        );
        assert!(
            i > 0 && lines[i - 1].trim_end().ends_with("*/"),
            "{name} has no doc comment right above it"
        );
        declared.push(name);
    }
    assert_eq!(declared, listed, "the header's calls and the table in src/lib.rs differ");
    assert_eq!(declared.len(), 27);
    // The seed's exact signatures (whitespace-normalised).
    let flat = header.split_whitespace().collect::<Vec<_>>().join(" ");
    for sig in [
        "module_loader_t *module_loader_create(void);",
        "module_error_t module_loader_load(module_loader_t *loader, const char *path, \
         const module_init_args_t *init_args);",
        "module_error_t module_loader_get_symbol(module_loader_t *loader, const char *name, \
         void **symbol);",
        "module_error_t module_loader_unload(module_loader_t *loader);",
        "void module_loader_destroy(module_loader_t *loader);",
        "const char *module_loader_strerror(module_error_t code);",
        "const char *module_loader_last_error(const module_loader_t *loader);",
    ] {
        assert!(flat.contains(sig), "module_loader.h lacks {sig:?}");
    }
}

#[test]
fn module_interface_h_keeps_every_name_modules_already_use() {
    // Every macro and type of the provisional hand-written header that C modules were written
    // against must stay defined.
    let macros = [
        "MODULE_INTERFACE_H",
        "MODULE_INTERFACE_VERSION",
        "MODULE_INTERFACE_VERSION_CURRENT",
        "MODULE_INIT_ARGS_VERSION_CURRENT",
        "MODULE_LOG_DEBUG",
        "MODULE_LOG_INFO",
        "MODULE_LOG_WARNING",
        "MODULE_LOG_ERROR",
        "MODULE_INFO__CAT2",
        "MODULE_INFO__CAT",
        "MODULE_INFO",
        "MODULE_VERSION",
        "MODULE_DESCRIPTION",
        "MODULE_LICENSE",
        "MODULE_AUTHOR",
        "MODULE_DEPENDS",
    ];
    let mut src = String::from("#include \"module_interface.h\"\n");
    for m in macros {
        src.push_str(&format!("#ifndef {m}\n#error \"{m} is not defined\"\n#endif\n"));
    }
    src.push_str(
        "_Static_assert(MODULE_INTERFACE_VERSION_CURRENT == MODULE_INTERFACE_VERSION(1, 1), \"v\");\n\
         _Static_assert(MODULE_LOG_DEBUG == -1 && MODULE_LOG_INFO == 0, \"levels\");\n\
         _Static_assert(MODULE_LOG_WARNING == 1 && MODULE_LOG_ERROR == 2, \"levels\");\n\
         _Static_assert(sizeof(struct module_init_args) == sizeof(module_init_args_t), \"t\");\n\
         _Static_assert(sizeof(module_init_args_t) == 32, \"four fields\");\n\
         static int x = 3 - MODULE_LOG_DEBUG;\n\
         static void *null_is_defined = NULL;\n\
         int main(void) { return x + (null_is_defined != 0); }\n",
    );
    compile_c("provisional names", "cc", &["-x", "c", "-std=c11"], &src);
}
