//! The configuration file, as `sightline` reads it at start (TOML, then validation):
//! a clear error or a configuration, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        let _ = config.validate();
    }
});
