//! Config parsing: any text is a config or an error that names a key or a
//! line, never a panic, and secrets never appear in the error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text, std::path::Path::new("fuzz.toml"), std::iter::empty()) {
        Ok(config) => {
            let _ = config.describe();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
