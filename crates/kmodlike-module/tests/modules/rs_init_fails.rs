//! Test module: `init` fails with a code and a message.

use kmodlike_module::InitError;

kmodlike_module::module! {
    init: |_| Err(InitError::with_message(-7, "no widgets configured")),
    description: "SDK test module: init returns an error",
}
