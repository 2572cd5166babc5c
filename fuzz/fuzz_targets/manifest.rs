//! Decoding arbitrary bytes as a checkpoint manifest: a typed error or a manifest, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = statewright::checkpoint::decode_manifest(std::path::Path::new("MANIFEST"), data);
});
