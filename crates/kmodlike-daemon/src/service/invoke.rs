//! `Invoke`: a module's message entry point, the same call for both tiers.

use base64::Engine as _;

use crate::varlink::types::InvokeReply;
use crate::varlink::VarlinkError;

use super::errors::map_error;
use super::LoaderService;

impl LoaderService {
    /// Invoke `symbol` of module `name` with the base64 `input` (none: empty).
    pub fn invoke(
        &self,
        name: &str,
        symbol: &str,
        input: Option<&str>,
    ) -> Result<InvokeReply, VarlinkError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let input = match input {
            None => Vec::new(),
            Some(s) => b64.decode(s).map_err(|e| {
                VarlinkError::invalid_parameter_because(
                    "input",
                    &format!("input must be base64: {e}"),
                )
            })?,
        };
        let handle = self.handle_for(name)?;
        let result = handle.invoke(symbol, &input);
        drop(handle);
        match result {
            Ok((result, output)) => {
                Ok(InvokeReply { result: i64::from(result), output: b64.encode(output) })
            }
            Err(e) => {
                // A crash, an exit or a deadline unloaded it: drop the daemon's dead reference
                // now rather than on the next look.
                drop(self.held());
                Err(map_error(&e, name))
            }
        }
    }
}
