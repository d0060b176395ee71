//! The config file: `Config::from_toml`, then `validate`, then what start-up builds from a valid
//! config (addresses, proxies, apps with their rate limiters, webhook endpoints).
//!
//! Invariants: nothing panics; errors never show a secret of the input (`secret_key`, `token`,
//! `signing_secret`, `database_url`), and parse errors no string value at all, since a parse error
//! may be about a secret put under the wrong key (see `followd_fuzz::config`); a valid config's
//! `Debug` shows no secret either.
#![no_main]

use followd::config::{Config, WebhookConfig};
use followd_fuzz::config::{assert_no_leak, string_values};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// What followd says about a config text.
enum Said {
    /// `from_toml` refused it.
    Parse(String),
    /// `validate` refused it.
    Invalid(String),
    /// It is valid; its `Debug`.
    Valid(String, Box<Config>),
}

impl Said {
    fn text(&self) -> String {
        match self {
            Said::Parse(m) | Said::Invalid(m) | Said::Valid(m, _) => m.clone(),
        }
    }
}

fn say(text: &str) -> Said {
    let c = match Config::from_toml(text, Path::new("/base")) {
        Ok(c) => c,
        Err(e) => return Said::Parse(format!("{e:#}")),
    };
    match c.validate() {
        Ok(()) => Said::Valid(format!("{c:?}"), Box::new(c)),
        Err(e) => Said::Invalid(format!("{e:#}")),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let said = say(text);
    let msg = said.text();
    let again = |t: &str| say(t).text();
    for v in string_values(text) {
        // Parse errors redact every string value; validation errors and Debug the secrets.
        if v.is_secret() || matches!(said, Said::Parse(_)) {
            assert_no_leak(text, &msg, &v.value, again);
        }
    }
    let Said::Valid(_, c) = said else { return };
    assert!(c.data_dir.is_absolute(), "a relative data_dir is resolved against the config's directory");
    c.listen_addr().expect("validated");
    c.proxies().expect("validated");
    let apps = followd::apps::Apps::new(&c.apps);
    for a in &c.apps {
        assert!(apps.get(a.sdkappid).is_some());
        let _ = WebhookConfig::endpoint(a.webhook.as_ref(), &Default::default());
    }
});
