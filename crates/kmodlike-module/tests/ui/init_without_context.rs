// An init must take the host's context: `fn(&Context) -> Result<(), InitError>`.
kmodlike_module::module! {
    init: init,
}

fn init() -> Result<(), kmodlike_module::InitError> {
    Ok(())
}

fn main() {}
