//! A pre-resolved message entry point: [`Handle::invoker`] checks the declaration and looks
//! the function up once; each [`Invoker::invoke_into`] is then one guarded call, with no
//! look-up, no allocation and no error built unless something went wrong.

use std::mem::MaybeUninit;

use crate::error::Result;

use super::handle::Handle;
use super::invoke::{InvokeFn, INVOKE_FIRST_CAPACITY};

/// The declared invoke entry point of one module, resolved once (see [`Handle::invoker`]).
/// Borrowed from its handle, so it cannot outlive it.
///
/// For a module in this process a call through it is the same guarded entry as
/// [`Handle::call0`]; for an isolated module it is the same round trip to its process as
/// [`Handle::invoke`]. After the module crashes or is unloaded, calls fail as they do through
/// the handle.
pub struct Invoker<'h> {
    handle: &'h Handle,
    /// The function, for a module in this process; `None` for an isolated module.
    f: Option<InvokeFn>,
    symbol: Box<str>,
}

impl std::fmt::Debug for Invoker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("module", &self.handle.name())
            .field("symbol", &self.symbol)
            .field("isolated", &self.f.is_none())
            .finish()
    }
}

impl Handle {
    /// The message entry point `symbol`, resolved once for repeated calls: an undeclared name
    /// is [`Error::SymbolNotFound`](crate::Error::SymbolNotFound) now, as for
    /// [`invoke`](Self::invoke), and the calls through the [`Invoker`] skip the look-up.
    /// Works for an isolated module too (each call is then a round trip to its process).
    pub fn invoker(&self, symbol: &str) -> Result<Invoker<'_>> {
        let f = if self.module.isolated.is_some() {
            if !self.module.declares_invoke(symbol) {
                return Err(self.module.undeclared_invoke(symbol));
            }
            None
        } else {
            Some(self.resolve_invoke(symbol)?)
        };
        Ok(Invoker { handle: self, f, symbol: symbol.into() })
    }
}

impl Invoker<'_> {
    /// The entry point's name.
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// [`Handle::invoke_into`] without the look-up: `(its return value, the output's
    /// length)`. An output that does not fit is
    /// [`Error::BufferTooSmall`](crate::Error::BufferTooSmall) with the size needed (the
    /// function wrote nothing); a crash is [`Error::Crashed`](crate::Error::Crashed) and the
    /// module is unloaded.
    #[inline]
    pub fn invoke_into(&self, input: &[u8], out: &mut [MaybeUninit<u8>]) -> Result<(i32, usize)> {
        match self.f {
            Some(f) => self.handle.call_invoke(f, &self.symbol, input, out),
            None => self.handle.invoke_into(&self.symbol, input, out),
        }
    }

    /// [`Handle::invoke`] without the look-up: `(its return value, its output)`, the buffer
    /// growing to what the function asks for.
    pub fn invoke(&self, input: &[u8]) -> Result<(i32, Vec<u8>)> {
        let capacity = INVOKE_FIRST_CAPACITY.max(input.len());
        match self.f {
            Some(f) => self.handle.invoke_local(f, &self.symbol, input, capacity),
            None => self.handle.invoke_with_capacity(&self.symbol, input, capacity),
        }
    }
}
