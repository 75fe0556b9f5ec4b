//! The message entry point: `int fn(const void *in, size_t in_len, void *out, size_t out_cap,
//! size_t *out_len)` (`module_invoke_fn`), called the same way in both tiers. In this process
//! it is a guarded call; for an isolated module it is one round trip to its process.

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;

use crate::error::{Error, Result};

use super::handle::Handle;

/// `module_invoke_fn`.
pub(crate) type InvokeFn =
    unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut usize) -> c_int;

/// The first output buffer an invoke offers: this, or the input's size when larger (an output
/// often mirrors its input). A function that needs more says so and is called again.
pub const INVOKE_FIRST_CAPACITY: usize = 4096;

/// Outputs up to this size are written to a buffer on the stack first.
const STACK_OUTPUT: usize = 4096;

/// The longest entry point name [`LAST`] keeps.
const CACHED_NAME: usize = 32;

/// One thread's last resolved entry point.
#[derive(Clone, Copy)]
struct LastInvoke {
    /// The module instance (ids are never reused; 0 is none).
    id: u64,
    len: usize,
    name: [u8; CACHED_NAME],
    addr: usize,
}

thread_local! {
    /// The last entry point this thread resolved, by instance id (ids are never reused, and a
    /// call into an instance that is no longer live is refused by the guard's entry), so a loop
    /// invoking one function takes no lock. A plain value with no destructor, so reading it
    /// costs a load; names longer than [`CACHED_NAME`] are not cached.
    static LAST: std::cell::Cell<LastInvoke> = const {
        std::cell::Cell::new(LastInvoke { id: 0, len: 0, name: [0; CACHED_NAME], addr: 0 })
    };
}

/// An invoke packed for the guard: owns nothing with a destructor.
#[repr(C)]
struct InvokeCtx {
    f: InvokeFn,
    input: *const u8,
    in_len: usize,
    out: *mut u8,
    out_cap: usize,
    out_len: usize,
    ret: c_int,
}

/// Calls `ctx.f` with the buffers of `ctx`; owns nothing droppable, so the guard may jump out
/// of it.
unsafe extern "C" fn invoke_trampoline(ctx: *mut c_void) {
    // SAFETY: `ctx` points to the caller's live `InvokeCtx`.
    let c = unsafe { &mut *(ctx as *mut InvokeCtx) };
    // SAFETY: `f` is a declared `module_invoke_fn` of the module (see `Handle::invoke`); the
    // input is readable for `in_len` bytes, the output writable for `out_cap`, `out_len` is ours.
    c.ret = unsafe {
        (c.f)(c.input.cast(), c.in_len, c.out.cast(), c.out_cap, &mut c.out_len as *mut usize)
    };
}

impl Handle {
    /// Call the module's message entry point `symbol` with `input`: `(its return value, its
    /// output)`. Works the same for a module in this process (a guarded call) and for an
    /// isolated one (one round trip to its process).
    ///
    /// `symbol` must be declared as an invoke entry point by the module (`MODULE_INVOKE(fn)` in
    /// C, `kmodlike_module::invoke!` in Rust): a function of type `module_invoke_fn`. An
    /// undeclared name is [`Error::SymbolNotFound`], saying so; that declaration, part of the
    /// promise made to [`Loader::open`](super::Loader::open), is what makes this call safe.
    ///
    /// The output buffer starts at [`INVOKE_FIRST_CAPACITY`] bytes (or the input's size when
    /// larger). A function whose output does not fit sets `*out_len` to the size it needs,
    /// writes nothing else and returns; it is then called once more with a buffer that size.
    ///
    /// A crash is [`Error::Crashed`] (the module is unloaded); for an isolated module also
    /// [`Error::Exited`] and [`Error::TimedOut`].
    pub fn invoke(&self, symbol: &str, input: &[u8]) -> Result<(i32, Vec<u8>)> {
        self.invoke_with_capacity(symbol, input, INVOKE_FIRST_CAPACITY.max(input.len()))
    }

    /// [`invoke`](Self::invoke), offering `capacity` bytes for the output first.
    pub fn invoke_with_capacity(
        &self,
        symbol: &str,
        input: &[u8],
        capacity: usize,
    ) -> Result<(i32, Vec<u8>)> {
        if let Some(child) = &self.module.isolated {
            if !self.module.declares_invoke(symbol) {
                return Err(self.module.undeclared_invoke(symbol));
            }
            return self.loader.invoke_isolated(&self.module, child, symbol, input);
        }
        let f = self.invoke_fn(symbol)?;
        self.invoke_local(f, symbol, input, capacity)
    }

    /// An invoke of `f`, the declared entry point `symbol` of this in-process module, into a
    /// vector, offering `capacity` bytes first.
    pub(super) fn invoke_local(
        &self,
        f: InvokeFn,
        symbol: &str,
        input: &[u8],
        capacity: usize,
    ) -> Result<(i32, Vec<u8>)> {
        if capacity <= STACK_OUTPUT {
            // A small output lands on the stack and is copied into a vector of its size: no
            // allocation at all for an empty one.
            let mut buf = [MaybeUninit::<u8>::uninit(); STACK_OUTPUT];
            match self.call_invoke(f, symbol, input, &mut buf) {
                Ok((ret, len)) => {
                    // SAFETY: the function wrote the first `len` bytes (`len` <= the buffer's
                    // size, checked by call_invoke); u8 has no invalid values.
                    let out = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
                    return Ok((ret, out.to_vec()));
                }
                Err(Error::BufferTooSmall { needed, .. }) => {
                    return self.invoke_local(f, symbol, input, needed.max(STACK_OUTPUT + 1))
                }
                Err(e) => return Err(e),
            }
        }
        let mut cap = capacity;
        // A function may ask for more once; one that asks again has changed its mind.
        for _ in 0..2 {
            let mut out: Vec<u8> = Vec::with_capacity(cap);
            match self.call_invoke(f, symbol, input, out.spare_capacity_mut()) {
                Ok((ret, len)) => {
                    // SAFETY: the function wrote `len` bytes of the buffer (its contract), and
                    // `len` is within the capacity (call_invoke checked).
                    unsafe { out.set_len(len) };
                    return Ok((ret, out));
                }
                Err(Error::BufferTooSmall { needed, .. }) => cap = needed,
                Err(e) => return Err(e),
            }
        }
        Err(self.too_small(symbol, cap, cap))
    }

    /// [`invoke`](Self::invoke) into the caller's buffer: `(its return value, the output's
    /// length)`. An output that does not fit is [`Error::BufferTooSmall`] with the size needed
    /// (the C API's `module_loader_invoke`).
    pub fn invoke_into(
        &self,
        symbol: &str,
        input: &[u8],
        out: &mut [MaybeUninit<u8>],
    ) -> Result<(i32, usize)> {
        if let Some(child) = &self.module.isolated {
            if !self.module.declares_invoke(symbol) {
                return Err(self.module.undeclared_invoke(symbol));
            }
            let (ret, bytes) = self.loader.invoke_isolated(&self.module, child, symbol, input)?;
            if bytes.len() > out.len() {
                return Err(self.too_small(symbol, bytes.len(), out.len()));
            }
            for (o, b) in out.iter_mut().zip(&bytes) {
                o.write(*b);
            }
            return Ok((ret, bytes.len()));
        }
        let f = self.invoke_fn(symbol)?;
        self.call_invoke(f, symbol, input, out)
    }

    /// The declared invoke entry point `symbol` of a module in this process.
    #[inline]
    fn invoke_fn(&self, symbol: &str) -> Result<InvokeFn> {
        let id = self.module.id;
        let last = LAST.get();
        // A byte loop rather than a slice comparison: names are short, and `memcmp` through
        // the PLT cost more than the loop (callgrind, docs/performance.md).
        if last.id == id
            && last.len == symbol.len()
            && symbol.bytes().zip(last.name).all(|(a, b)| a == b)
        {
            // SAFETY: `addr` came from `resolve_invoke` for this instance and this name.
            return Ok(unsafe { std::mem::transmute::<usize, InvokeFn>(last.addr) });
        }
        self.invoke_fn_slow(symbol)
    }

    /// [`invoke_fn`](Self::invoke_fn) when this thread's last entry point was another.
    #[cold]
    #[inline(never)]
    fn invoke_fn_slow(&self, symbol: &str) -> Result<InvokeFn> {
        let f = self.resolve_invoke(symbol)?;
        if symbol.len() <= CACHED_NAME {
            let mut name = [0; CACHED_NAME];
            name[..symbol.len()].copy_from_slice(symbol.as_bytes());
            let last = LastInvoke { id: self.module.id, len: symbol.len(), name, addr: f as usize };
            LAST.set(last);
        }
        Ok(f)
    }

    /// The declared invoke entry point `symbol` of a module in this process, looked up (no
    /// thread-local cache).
    pub(super) fn resolve_invoke(&self, symbol: &str) -> Result<InvokeFn> {
        let p = self.module.invoke_entry(symbol)?;
        // SAFETY: the module declares `symbol` a `module_invoke_fn` (`invoke=` in its
        // `.modinfo`), which the promise made at open covers; `p` is non-NULL and in its code.
        Ok(unsafe { std::mem::transmute::<*mut c_void, InvokeFn>(p) })
    }

    /// One guarded call of `f` with `out`: `(its return value, the output's length)`, or
    /// `BufferTooSmall` when it set `*out_len` above the buffer's size (it then wrote nothing).
    #[inline]
    pub(super) fn call_invoke(
        &self,
        f: InvokeFn,
        symbol: &str,
        input: &[u8],
        out: &mut [MaybeUninit<u8>],
    ) -> Result<(i32, usize)> {
        let mut ctx = InvokeCtx {
            f,
            input: input.as_ptr(),
            in_len: input.len(),
            out: out.as_mut_ptr().cast(),
            out_cap: out.len(),
            out_len: 0,
            ret: 0,
        };
        // SAFETY: the trampoline calls the module's declared invoke function with buffers valid
        // for their sizes; it owns nothing droppable, and `f`'s frames are the module's own
        // code, which the promise made at open lets the guard abandon.
        unsafe {
            self.enter(
                invoke_trampoline,
                &mut ctx as *mut InvokeCtx as *mut c_void,
                f as usize as u64,
                None,
            )
        }?;
        if ctx.out_len > out.len() {
            return Err(self.too_small(symbol, ctx.out_len, out.len()));
        }
        Ok((ctx.ret, ctx.out_len))
    }

    /// `BufferTooSmall` for `symbol`: built off the hot path.
    #[cold]
    #[inline(never)]
    pub(super) fn too_small(&self, symbol: &str, needed: usize, capacity: usize) -> Error {
        Error::BufferTooSmall {
            module: self.module.name.clone(),
            symbol: symbol.to_owned(),
            needed,
            capacity,
        }
    }
}
