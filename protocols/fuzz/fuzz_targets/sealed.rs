//! Any byte string as a sealed box: decoding and opening fail with a typed error, never
//! a panic, and never open to anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0_protocols::crypto::seal::{E2eKeys, SealedBox, open_sealed};

fuzz_target!(|data: &[u8]| {
    let _ = SealedBox::decode(data);
    let keys = E2eKeys::from_seed([9; 32]);
    assert!(open_sealed(&keys, data, None).is_err(), "a random box opened");
});
