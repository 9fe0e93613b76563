//! Any bytes through the whole path `mizzen analyze` takes: YAML parsing, strict
//! decoding, validation, analysis and message formatting must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = galley::CheckOptions {
        analyze: true,
        ..Default::default()
    };
    let outcome = galley::check_str(text, "fuzz.yaml", &opts);
    for m in &outcome.messages {
        let _ = m.to_string();
    }
});
