//! Study design (TOML) and contouring-time CSV parsers on arbitrary text:
//! errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = std::path::Path::new("fuzz.toml");
    let _ = delineate_eval::study::parse_design(&text, path);
    if let Ok(times) = delineate_eval::study::parse_times(&text, path) {
        for t in times.values() {
            let _ = delineate_eval::stats::mmss(*t);
        }
    }
    let _ = delineate_eval::stats::parse_time(&text);
});
