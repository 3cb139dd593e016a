//! The analyst console: a few static files (HTML, CSS, JavaScript
//! modules, one string catalog per language) built into the binary and
//! served from `/console/` on the REST listener. The pages read the REST
//! API with the session cookie; nothing is fetched from anywhere else.
//!
//! Its pages get their own Content-Security-Policy: scripts and styles only
//! from this server (no inline script, no eval), connections only to it,
//! and Trusted Types required with no policy allowed, so no string ever
//! becomes markup (`innerHTML` throws); everything is written as text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The console pages' policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

macro_rules! assets {
    ($($name:literal => $kind:literal),* $(,)?) => {
        /// Every file of the console: name under `/console/`, type, bytes.
        pub const ASSETS: &[(&str, &str, &[u8])] = &[
            $(($name, $kind, include_bytes!(concat!("../../console/", $name)))),*
        ];
    };
}

assets! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "js/app.js" => "text/javascript; charset=utf-8",
    "js/api.js" => "text/javascript; charset=utf-8",
    "js/dom.js" => "text/javascript; charset=utf-8",
    "js/i18n.js" => "text/javascript; charset=utf-8",
    "js/charts.js" => "text/javascript; charset=utf-8",
    "js/pages/file.js" => "text/javascript; charset=utf-8",
    "js/pages/feed.js" => "text/javascript; charset=utf-8",
    "js/pages/fleet.js" => "text/javascript; charset=utf-8",
    "js/pages/hunts.js" => "text/javascript; charset=utf-8",
    "js/pages/health.js" => "text/javascript; charset=utf-8",
    "js/pages/rules.js" => "text/javascript; charset=utf-8",
    "js/pages/iocs.js" => "text/javascript; charset=utf-8",
    "i18n/en.json" => "application/json",
    "i18n/az.json" => "application/json",
    "i18n/same.json" => "application/json",
}

/// `GET /`: to the console.
pub async fn root() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/console/")]).into_response()
}

/// `GET /console/`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /console/{*path}`: one of [`ASSETS`].
pub async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    serve(&name)
}

fn serve(name: &str) -> Response {
    let Some((_, kind, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return super::error::ApiError::not_found(format!("no console file {name:?}")).into_response();
    };
    let mut r = (StatusCode::OK, *bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // Pages and scripts change with the binary: always asked again.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn catalog(name: &str) -> BTreeMap<String, String> {
        let (_, _, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name).unwrap();
        serde_json::from_slice(bytes).unwrap()
    }

    /// Every string of the console is in both catalogs, and an Azerbaijani
    /// string equals its English one only where listed (names, units).
    #[test]
    fn the_azerbaijani_catalog_covers_every_english_string() {
        let (en, az) = (catalog("i18n/en.json"), catalog("i18n/az.json"));
        let same: Vec<String> = {
            let (_, _, b) = ASSETS.iter().find(|(n, _, _)| *n == "i18n/same.json").unwrap();
            serde_json::from_slice(b).unwrap()
        };
        let missing: Vec<&String> = en.keys().filter(|k| !az.contains_key(*k)).collect();
        assert!(missing.is_empty(), "not in az.json: {missing:?}");
        let extra: Vec<&String> = az.keys().filter(|k| !en.contains_key(*k)).collect();
        assert!(extra.is_empty(), "only in az.json: {extra:?}");
        let untranslated: Vec<&String> = en.iter().filter(|(k, v)| az[*k] == **v && !same.contains(k)).map(|(k, _)| k).collect();
        assert!(untranslated.is_empty(), "the same in both, and not listed in same.json: {untranslated:?}");
        for k in &same {
            assert!(en.contains_key(k), "same.json lists {k}, which no catalog has");
        }
        assert!(en.len() > 100, "{} strings", en.len());
    }

    /// Every string the scripts ask for is in the catalog, and every
    /// catalog string is used.
    #[test]
    fn the_scripts_ask_only_for_strings_in_the_catalog() {
        let en = catalog("i18n/en.json");
        let mut used = std::collections::BTreeSet::new();
        for (name, _, bytes) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js") || n.ends_with(".html")) {
            let text = std::str::from_utf8(bytes).unwrap();
            // t("key") and data-t="key".
            for (open, close) in [("t(\"", '"'), ("data-t=\"", '"'), ("t('", '\'')] {
                let mut rest = text;
                while let Some(i) = rest.find(open) {
                    // `t(` itself, not the end of `createElement(`.
                    let whole = i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                    rest = &rest[i + open.len()..];
                    if !whole {
                        continue;
                    }
                    if let Some(j) = rest.find(close) {
                        let key = &rest[..j];
                        if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
                            assert!(en.contains_key(key), "{name} asks for {key:?}, not in en.json");
                            used.insert(key.to_string());
                        }
                    }
                }
            }
        }
        // Keys chosen at run time appear quoted in the scripts ('level.clean').
        let all: String = ASSETS
            .iter()
            .filter(|(n, _, _)| n.ends_with(".js") || n.ends_with(".html"))
            .map(|(_, _, b)| String::from_utf8_lossy(b).into_owned())
            .collect();
        let unused: Vec<&String> = en
            .keys()
            .filter(|k| !used.contains(*k) && !all.contains(&format!("'{k}'")) && !all.contains(&format!("\"{k}\"")))
            .collect();
        assert!(unused.is_empty(), "in en.json but never asked for: {unused:?}");
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_no_eval() {
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe") && CSP.contains("require-trusted-types-for"));
        let (_, _, html) = ASSETS.iter().find(|(n, _, _)| *n == "index.html").unwrap();
        let html = std::str::from_utf8(html).unwrap();
        assert!(!html.contains("<script>") && !html.contains("javascript:"), "no inline script");
        for handler in ["onclick", "onload", "onerror", "onsubmit", "style="] {
            assert!(!html.contains(handler), "no inline {handler}");
        }
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing from elsewhere");
    }
}
