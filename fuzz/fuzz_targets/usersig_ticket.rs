//! UserSigs built around arbitrary JSON. The input is the ticket's JSON text, which the target
//! compresses and encodes as a real UserSig, so every mutation reaches the JSON and HMAC checks
//! instead of dying in base64 or zlib. `"TLS.sig":"@sign"` asks for the correct HMAC of the ticket's
//! own fields, so the accepting path is fuzzed too, with any identifier, times and userbuf.
//!
//! Invariants: those of the `usersig` target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    followd_fuzz::usersig::check(&followd_fuzz::usersig::wrap(data));
});
