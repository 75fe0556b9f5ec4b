//! A small Varlink implementation: framing ([`codec`]), typed parameter access ([`params`]), the
//! wire types of `io.kmodlike.Loader` ([`types`]), and the interface description itself.
//!
//! Varlink (<https://varlink.org>) is JSON over a stream socket, each message terminated by a
//! NUL byte; errors are named (`io.kmodlike.Loader.ModuleCrashed`) and carry parameters. The
//! daemon speaks only what it needs: calls, `more` streams, `oneway`, and the introspection of
//! `org.varlink.service`.

pub mod codec;
pub mod params;
pub mod types;

use serde_json::{json, Map, Value};

/// The interface this daemon implements.
pub const INTERFACE: &str = "io.kmodlike.Loader";

/// The commented interface definition: the protocol's documentation, served by
/// `org.varlink.service.GetInterfaceDescription`.
pub const INTERFACE_DESCRIPTION: &str = include_str!("io.kmodlike.Loader.varlink");

/// The standard service interface every Varlink service implements.
pub const SERVICE_INTERFACE: &str = "org.varlink.service";

/// The description of `org.varlink.service` (from the Varlink specification).
pub const SERVICE_DESCRIPTION: &str = "\
# The Varlink Service Interface is provided by every varlink service. It
# describes the service and the interfaces it implements.
interface org.varlink.service

# Get a list of all the interfaces a service provides and information
# about the implementation.
method GetInfo() -> (
  vendor: string,
  product: string,
  version: string,
  url: string,
  interfaces: []string
)

# Get the description of an interface that is implemented by this service.
method GetInterfaceDescription(interface: string) -> (description: string)

# The requested interface was not found.
error InterfaceNotFound (interface: string)

# The requested method was not found
error MethodNotFound (method: string)

# The interface defines the requested method, but the service does not
# implement it.
error MethodNotImplemented (method: string)

# One of the passed parameters is invalid.
error InvalidParameter (parameter: string)

# Client is denied access
error PermissionDenied ()

# Method is expected to be called with 'more' set to true, but wasn't
error ExpectedMore ()
";

/// A named Varlink error with its parameters, as sent in a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct VarlinkError {
    /// Fully qualified name: `io.kmodlike.Loader.ModuleCrashed`.
    pub name: String,
    /// The error's parameters (an object).
    pub parameters: Map<String, Value>,
}

impl VarlinkError {
    /// An error `name` with `parameters` (a JSON object; anything else gives no parameters).
    pub fn new(name: &str, parameters: Value) -> VarlinkError {
        let parameters = match parameters {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        VarlinkError { name: name.to_owned(), parameters }
    }

    /// An error of `io.kmodlike.Loader`: `loader("ModuleNotLoaded", json!({...}))`.
    pub fn loader(short_name: &str, parameters: Value) -> VarlinkError {
        VarlinkError::new(&format!("{INTERFACE}.{short_name}"), parameters)
    }

    /// `org.varlink.service.InvalidParameter` naming `parameter`.
    pub fn invalid_parameter(parameter: &str) -> VarlinkError {
        VarlinkError::new("org.varlink.service.InvalidParameter", json!({ "parameter": parameter }))
    }

    /// `org.varlink.service.InvalidParameter` naming `parameter`, with a human-readable reason
    /// in an extra `message` parameter (clients that do not know it ignore it).
    pub fn invalid_parameter_because(parameter: &str, message: &str) -> VarlinkError {
        VarlinkError::new(
            "org.varlink.service.InvalidParameter",
            json!({ "parameter": parameter, "message": message }),
        )
    }

    /// `org.varlink.service.MethodNotFound`.
    pub fn method_not_found(method: &str) -> VarlinkError {
        VarlinkError::new("org.varlink.service.MethodNotFound", json!({ "method": method }))
    }

    /// `org.varlink.service.InterfaceNotFound`.
    pub fn interface_not_found(interface: &str) -> VarlinkError {
        VarlinkError::new(
            "org.varlink.service.InterfaceNotFound",
            json!({ "interface": interface }),
        )
    }

    /// `org.varlink.service.ExpectedMore`: the method streams and needs `"more": true`.
    pub fn expected_more() -> VarlinkError {
        VarlinkError::new("org.varlink.service.ExpectedMore", json!({}))
    }

    /// `io.kmodlike.Loader.Failed` with a message.
    pub fn failed(message: impl Into<String>) -> VarlinkError {
        VarlinkError::loader("Failed", json!({ "message": message.into() }))
    }

    /// The name without the interface: `ModuleCrashed`.
    pub fn short_name(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// A string parameter, when present.
    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).and_then(Value::as_str)
    }
}

impl std::fmt::Display for VarlinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.parameters.is_empty() {
            write!(f, " {}", Value::Object(self.parameters.clone()))?;
        }
        Ok(())
    }
}

impl std::error::Error for VarlinkError {}

/// The method names an interface description declares (`method Name(`), in file order.
pub fn declared_methods(description: &str) -> Vec<&str> {
    description
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("method "))
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}

/// The error names an interface description declares (`error Name (`), in file order.
pub fn declared_errors(description: &str) -> Vec<&str> {
    description
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("error "))
        .filter_map(|rest| rest.split(|c: char| c == '(' || c.is_whitespace()).next())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_file_declares_the_interface_and_its_methods() {
        assert!(INTERFACE_DESCRIPTION.lines().any(|l| l == format!("interface {INTERFACE}")));
        let methods = declared_methods(INTERFACE_DESCRIPTION);
        for m in [
            "Ping", "List", "Info", "Load", "Unload", "Reload", "Clear", "Call", "Invoke", "Calls",
            "Crashes", "Status", "Monitor",
        ] {
            assert!(methods.contains(&m), "{m} is not declared: {methods:?}");
        }
        let errors = declared_errors(INTERFACE_DESCRIPTION);
        for e in [
            "PermissionDenied",
            "ModuleCrashed",
            "ModuleNotLoaded",
            "LoadFailed",
            "Busy",
            "TimedOut",
        ] {
            assert!(errors.contains(&e), "{e} is not declared: {errors:?}");
        }
    }

    #[test]
    fn every_declaration_is_documented() {
        // The .varlink file is the protocol's documentation: each method, type and error has a
        // comment right above it.
        let lines: Vec<&str> = INTERFACE_DESCRIPTION.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let is_decl = ["method ", "error ", "type "].iter().any(|k| line.starts_with(k));
            if is_decl {
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "line {}: {line:?} has no comment above it",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn error_names_are_qualified() {
        let e = VarlinkError::loader("ModuleNotLoaded", json!({"module": "hello"}));
        assert_eq!(e.name, "io.kmodlike.Loader.ModuleNotLoaded");
        assert_eq!(e.short_name(), "ModuleNotLoaded");
        assert_eq!(e.param_str("module"), Some("hello"));
        assert_eq!(e.to_string(), "io.kmodlike.Loader.ModuleNotLoaded {\"module\":\"hello\"}");
    }
}
