//! The interface file (`io.kmodlike.Loader.varlink`) and the Rust wire types (`varlink::types`)
//! are both written by hand; this test keeps them from drifting apart. It parses the interface
//! file, and for every `type` and every method reply builds a sample value with every field the
//! file declares, then checks against the Rust type that:
//! - the sample decodes (each field's type agrees) and encodes back to exactly the same JSON
//!   (no field missing or extra on the Rust side, ints stay ints, floats floats);
//! - every optional (`?`) field may be absent or null;
//! - no required field may be absent or null (the Rust field is not an `Option`).
//!
//! Every declared type and method must have its Rust type in the table below: a new
//! declaration without one fails here.

use std::collections::BTreeMap;

use kmodlike_daemon::varlink::types::*;
use kmodlike_daemon::varlink::INTERFACE_DESCRIPTION;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// A Varlink type expression.
#[derive(Debug, Clone)]
enum Ty {
    Bool,
    Int,
    Float,
    String,
    Object,
    Optional(Box<Ty>),
    Array(Box<Ty>),
    Dict(Box<Ty>),
    Named(String),
    Enum(Vec<String>),
    Struct(Vec<(String, Ty)>),
}

/// A struct's fields, in order.
type Fields = Vec<(String, Ty)>;

#[derive(Debug)]
struct Interface {
    types: BTreeMap<String, Ty>,
    /// Method name -> (parameters, reply).
    methods: BTreeMap<String, (Fields, Fields)>,
    errors: BTreeMap<String, Fields>,
}

/// Tokens of the interface file, comments dropped.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap();
        let mut word = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            let punct = match c {
                '(' | ')' | ',' | ':' | '?' => Some(c.to_string()),
                '[' => {
                    // `[]` or `[string]`.
                    let mut t = String::from("[");
                    for d in chars.by_ref() {
                        t.push(d);
                        if d == ']' {
                            break;
                        }
                    }
                    Some(t)
                }
                '-' if chars.peek() == Some(&'>') => {
                    chars.next();
                    Some("->".to_owned())
                }
                _ => None,
            };
            if c.is_whitespace() || punct.is_some() {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                out.extend(punct);
            } else {
                word.push(c);
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    out
}

struct Parser {
    toks: Vec<String>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> String {
        let t = self.toks.get(self.at).cloned().unwrap_or_else(|| panic!("unexpected end"));
        self.at += 1;
        t
    }
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.at).map(String::as_str)
    }
    fn expect(&mut self, t: &str) {
        let got = self.next();
        assert_eq!(got, t, "at token {}: expected {t:?}", self.at);
    }

    /// `( ... )`: a struct (`name: type, ...`) or an enum (`a, b, ...`).
    fn parens(&mut self) -> Ty {
        self.expect("(");
        let mut fields = Vec::new();
        let mut variants = Vec::new();
        while self.peek() != Some(")") {
            let name = self.next();
            if self.peek() == Some(":") {
                self.next();
                fields.push((name, self.ty()));
            } else {
                variants.push(name);
            }
            if self.peek() == Some(",") {
                self.next();
            }
        }
        self.expect(")");
        if variants.is_empty() {
            Ty::Struct(fields)
        } else {
            assert!(fields.is_empty(), "a mix of enum values and fields");
            Ty::Enum(variants)
        }
    }

    fn ty(&mut self) -> Ty {
        match self.peek() {
            Some("?") => {
                self.next();
                Ty::Optional(Box::new(self.ty()))
            }
            Some("(") => self.parens(),
            _ => match self.next().as_str() {
                "[]" => Ty::Array(Box::new(self.ty())),
                "[string]" => Ty::Dict(Box::new(self.ty())),
                "bool" => Ty::Bool,
                "int" => Ty::Int,
                "float" => Ty::Float,
                "string" => Ty::String,
                "object" => Ty::Object,
                name => Ty::Named(name.to_owned()),
            },
        }
    }

    fn fields(&mut self) -> Vec<(String, Ty)> {
        match self.parens() {
            Ty::Struct(f) => f,
            Ty::Enum(v) => panic!("expected fields, got enum values {v:?}"),
            _ => unreachable!(),
        }
    }
}

fn parse(text: &str) -> Interface {
    let mut p = Parser { toks: tokens(text), at: 0 };
    let mut iface =
        Interface { types: BTreeMap::new(), methods: BTreeMap::new(), errors: BTreeMap::new() };
    while let Some(kw) = p.peek().map(str::to_owned) {
        p.next();
        match kw.as_str() {
            "interface" => {
                p.next();
            }
            "type" => {
                let name = p.next();
                let ty = p.parens();
                iface.types.insert(name, ty);
            }
            "method" => {
                let name = p.next();
                let params = p.fields();
                p.expect("->");
                let reply = p.fields();
                iface.methods.insert(name, (params, reply));
            }
            "error" => {
                let name = p.next();
                let fields = p.fields();
                iface.errors.insert(name, fields);
            }
            other => panic!("unexpected {other:?} at token {}", p.at),
        }
    }
    iface
}

/// A sample value of `ty` with every optional field present.
fn sample(iface: &Interface, ty: &Ty) -> Value {
    match ty {
        Ty::Bool => json!(true),
        Ty::Int => json!(7),
        Ty::Float => json!(1.5),
        Ty::String => json!("s"),
        Ty::Object => json!({}),
        Ty::Optional(t) => sample(iface, t),
        Ty::Array(t) => json!([sample(iface, t)]),
        Ty::Dict(t) => json!({ "k": sample(iface, t) }),
        Ty::Named(n) => {
            sample(iface, iface.types.get(n).unwrap_or_else(|| panic!("type {n} is not declared")))
        }
        Ty::Enum(v) => json!(v[0]),
        Ty::Struct(fields) => Value::Object(sample_fields(iface, fields)),
    }
}

fn sample_fields(iface: &Interface, fields: &[(String, Ty)]) -> Map<String, Value> {
    fields.iter().map(|(n, t)| (n.clone(), sample(iface, t))).collect()
}

/// The checks of the module documentation, for Rust type `T` against `fields`.
fn check<T: Serialize + DeserializeOwned>(what: &str, iface: &Interface, fields: &[(String, Ty)]) {
    let full = sample_fields(iface, fields);
    let decoded: T = serde_json::from_value(Value::Object(full.clone()))
        .unwrap_or_else(|e| panic!("{what}: the Rust type does not decode {full:?}: {e}"));
    let back = serde_json::to_value(&decoded).unwrap();
    let back_keys: Vec<&String> = back.as_object().unwrap().keys().collect();
    let declared: Vec<&String> = full.keys().collect();
    let mut a = back_keys.clone();
    let mut b = declared.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{what}: fields in Rust (left) and in the interface file (right) differ");
    assert_eq!(back, Value::Object(full.clone()), "{what}: a field's type differs");

    for (name, ty) in fields {
        let mut absent = full.clone();
        absent.remove(name);
        let mut null = full.clone();
        null.insert(name.clone(), Value::Null);
        let absent_ok = serde_json::from_value::<T>(Value::Object(absent)).is_ok();
        let null_ok = serde_json::from_value::<T>(Value::Object(null)).is_ok();
        if matches!(ty, Ty::Optional(_)) {
            assert!(absent_ok && null_ok, "{what}.{name} is optional (?) but Rust requires it");
        } else {
            assert!(
                !absent_ok && !null_ok,
                "{what}.{name} is required but Rust accepts it absent or null (an Option?)"
            );
        }
    }
}

type Checker = fn(&str, &Interface, &[(String, Ty)]);

/// Each declared struct type, its Rust type.
fn type_checks() -> BTreeMap<&'static str, Checker> {
    BTreeMap::from([
        ("ModinfoEntry", check::<ModinfoEntry> as Checker),
        ("Module", check::<Module>),
        ("ModuleFile", check::<ModuleFile>),
        ("CrashReport", check::<CrashReport>),
        ("CrashFrame", check::<CrashFrame>),
        ("Taint", check::<Taint>),
        ("TaintAck", check::<TaintAck>),
        ("CrashLoop", check::<CrashLoop>),
        ("Event", check::<Event>),
        ("ConfiguredModule", check::<ConfiguredModule>),
        ("CallInFlight", check::<CallInFlight>),
        ("CallTimeout", check::<CallTimeout>),
    ])
}

/// Each method, the Rust type of its reply (`None`: an empty reply).
fn reply_checks() -> BTreeMap<&'static str, Option<Checker>> {
    BTreeMap::from([
        ("Ping", Some(check::<PingReply> as Checker)),
        ("List", Some(check::<ListReply>)),
        ("Info", Some(check::<InfoReply>)),
        ("Load", Some(check::<LoadReply>)),
        ("Unload", Some(check::<UnloadReply>)),
        ("Reload", Some(check::<ReloadReply>)),
        ("Clear", None),
        ("ClearTaint", Some(check::<ClearTaintReply>)),
        ("Call", Some(check::<CallReply>)),
        ("Invoke", Some(check::<InvokeReply>)),
        ("Calls", Some(check::<CallsReply>)),
        ("Crashes", Some(check::<CrashesReply>)),
        ("SetModulePath", Some(check::<SetModulePathReply>)),
        ("ReloadConfiguration", Some(check::<ReloadConfigurationReply>)),
        ("SetSignaturePolicy", Some(check::<SetSignaturePolicyReply>)),
        ("Status", Some(check::<StatusReply>)),
        ("Monitor", Some(check::<MonitorReply>)),
    ])
}

#[test]
fn every_type_of_the_interface_file_matches_its_rust_type() {
    let iface = parse(INTERFACE_DESCRIPTION);
    let checks = type_checks();
    for (name, ty) in &iface.types {
        match ty {
            // Enums travel as strings; their values are checked where they are produced.
            Ty::Enum(_) => {}
            Ty::Struct(fields) => {
                let check = checks
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("type {name} has no Rust type in this test"));
                check(name, &iface, fields);
            }
            other => panic!("type {name} is neither a struct nor an enum: {other:?}"),
        }
    }
    for name in checks.keys() {
        assert!(iface.types.contains_key(*name), "{name} is no longer declared");
    }
}

#[test]
fn every_method_reply_matches_its_rust_type() {
    let iface = parse(INTERFACE_DESCRIPTION);
    let checks = reply_checks();
    for (name, (_, reply)) in &iface.methods {
        let check = checks
            .get(name.as_str())
            .unwrap_or_else(|| panic!("method {name} has no reply type in this test"));
        match check {
            Some(check) => check(&format!("{name} reply"), &iface, reply),
            None => assert!(reply.is_empty(), "method {name} now has a reply: {reply:?}"),
        }
    }
    for name in checks.keys() {
        assert!(iface.methods.contains_key(*name), "{name} is no longer declared");
    }
}

#[test]
fn the_enums_hold_every_value_the_daemon_sends() {
    let iface = parse(INTERFACE_DESCRIPTION);
    let values = |name: &str| match &iface.types[name] {
        Ty::Enum(v) => v.clone(),
        other => panic!("{name} is not an enum: {other:?}"),
    };
    let states = values("ModuleState");
    for s in [
        kmodlike::ModuleState::Loading,
        kmodlike::ModuleState::Live,
        kmodlike::ModuleState::Unloading,
        kmodlike::ModuleState::Crashed,
        kmodlike::ModuleState::Unloaded,
    ] {
        assert!(states.contains(&s.name().to_owned()), "ModuleState lacks {}", s.name());
    }
    let kinds = values("EventKind");
    for k in [
        "started",
        "loaded",
        "unloaded",
        "crashed",
        "quarantined",
        "quarantine_cleared",
        "tainted",
        "taint_cleared",
    ] {
        assert!(kinds.contains(&k.to_owned()), "EventKind lacks {k}");
    }
}

#[test]
fn the_parser_reads_what_the_checks_rely_on() {
    let iface = parse(INTERFACE_DESCRIPTION);
    let (params, _) = &iface.methods["Call"];
    assert!(matches!(&params[3], (n, Ty::Optional(t)) if n == "arg" && matches!(**t, Ty::Int)));
    assert!(matches!(&iface.errors["ModuleNotFound"][1].1, Ty::Array(_)));
    assert!(iface.errors.contains_key("NotTainted"));
}
