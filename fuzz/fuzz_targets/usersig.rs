//! UserSig strings as they arrive in the URL: any text at all.
//!
//! Invariants (see `followd_fuzz::usersig::check`): decoding and verifying never panic; `verify`
//! refuses what `decode` refuses, with the same error, and otherwise runs its checks in the order of
//! decisions.md §3; it accepts exactly the tickets whose HMAC matches; a UserSig generated from a
//! decoded ticket's fields verifies and decodes to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        followd_fuzz::usersig::check(s);
    }
});
