//! Typed access to a call's parameters. Each accessor names the parameter in the
//! `org.varlink.service.InvalidParameter` error it returns, so a client sending `{"spec": 3}`
//! learns that `spec` is wrong, not merely that something is.

use serde_json::{Map, Value};

use super::VarlinkError;

/// A call's parameters, consumed one by one; [`Params::finish`] rejects any left over.
#[derive(Debug)]
pub struct Params {
    map: Map<String, Value>,
}

impl Params {
    /// Wrap a request's parameters.
    pub fn new(map: Map<String, Value>) -> Params {
        Params { map }
    }

    /// A parameter without consuming it.
    pub fn peek(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// A string parameter without consuming it (`None` when absent or not a string).
    pub fn peek_str(&self, name: &str) -> Option<&str> {
        self.map.get(name).and_then(Value::as_str)
    }

    /// A required string.
    pub fn string(&mut self, name: &str) -> Result<String, VarlinkError> {
        self.opt_string(name)?.ok_or_else(|| missing(name))
    }

    /// An optional string (absent or null: `None`).
    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, VarlinkError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(name, "a string", &other)),
        }
    }

    /// A required array of strings.
    pub fn strings(&mut self, name: &str) -> Result<Vec<String>, VarlinkError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Err(missing(name)),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(wrong_type(name, "an array of strings", &other)),
                })
                .collect(),
            Some(other) => Err(wrong_type(name, "an array of strings", &other)),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, VarlinkError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(wrong_type(name, "a boolean", &other)),
        }
    }

    /// An optional integer that must fit a C `int`.
    pub fn opt_c_int(&mut self, name: &str) -> Result<Option<i32>, VarlinkError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64().and_then(|v| i32::try_from(v).ok()) {
                Some(v) => Ok(Some(v)),
                None => Err(VarlinkError::invalid_parameter_because(
                    name,
                    &format!("{name} must be an integer that fits a C int, got {n}"),
                )),
            },
            Some(other) => Err(wrong_type(name, "an integer", &other)),
        }
    }

    /// An optional number of seconds: finite and not negative.
    pub fn opt_seconds(&mut self, name: &str) -> Result<Option<f64>, VarlinkError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && (0.0..=f64::from(u32::MAX)).contains(&v) => Ok(Some(v)),
                _ => Err(VarlinkError::invalid_parameter_because(
                    name,
                    &format!("{name} must be seconds between 0 and {}, got {n}", u32::MAX),
                )),
            },
            Some(other) => Err(wrong_type(name, "a number of seconds", &other)),
        }
    }

    /// Fail on a parameter the method does not declare.
    pub fn finish(self) -> Result<(), VarlinkError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(extra) => Err(VarlinkError::invalid_parameter_because(
                extra,
                &format!("unknown parameter {extra:?}"),
            )),
        }
    }
}

fn missing(name: &str) -> VarlinkError {
    VarlinkError::invalid_parameter_because(name, &format!("missing parameter {name:?}"))
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> VarlinkError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    VarlinkError::invalid_parameter_because(name, &format!("{name} must be {expected}, got {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Params {
        match v {
            Value::Object(m) => Params::new(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn reads_declared_parameters() {
        let mut p = params(json!({"module": "hello", "force": true, "arg": -7}));
        assert_eq!(p.string("module").unwrap(), "hello");
        assert_eq!(p.opt_bool("force").unwrap(), Some(true));
        assert_eq!(p.opt_bool("wait").unwrap(), None);
        assert_eq!(p.opt_c_int("arg").unwrap(), Some(-7));
        p.finish().unwrap();
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = params(json!({"module": 3})).string("module").unwrap_err();
        assert_eq!(e.name, "org.varlink.service.InvalidParameter");
        assert_eq!(e.parameters["parameter"], "module");
        assert!(e.param_str("message").unwrap().contains("must be a string"));

        let e = params(json!({})).string("spec").unwrap_err();
        assert_eq!(e.parameters["parameter"], "spec");

        let e = params(json!({"arg": 1u64 << 40})).opt_c_int("arg").unwrap_err();
        assert_eq!(e.parameters["parameter"], "arg");

        let e = params(json!({"arg": 1.5})).opt_c_int("arg").unwrap_err();
        assert_eq!(e.parameters["parameter"], "arg");

        let e = params(json!({"force": "yes"})).opt_bool("force").unwrap_err();
        assert_eq!(e.parameters["parameter"], "force");

        let e = params(json!({"timeout": -1})).opt_seconds("timeout").unwrap_err();
        assert_eq!(e.parameters["parameter"], "timeout");
        let e = params(json!({"timeout": "2"})).opt_seconds("timeout").unwrap_err();
        assert!(e.param_str("message").unwrap().contains("seconds"));
        assert_eq!(params(json!({"timeout": 2})).opt_seconds("timeout").unwrap(), Some(2.0));
        assert_eq!(params(json!({"timeout": 0.5})).opt_seconds("timeout").unwrap(), Some(0.5));

        let e = params(json!({"bogus": 1})).finish().unwrap_err();
        assert_eq!(e.parameters["parameter"], "bogus");
    }
}
