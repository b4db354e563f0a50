//! `needle_nav register`: JSON on stdin -> JSON on stdout (`core::registration::register_json`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let out = needle_nav_core::registration::register_json(text);
    // The answer is always JSON: a result or {"error": ...}.
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&out);
    assert!(parsed.is_ok(), "register_json answered with invalid JSON: {out}");
});
