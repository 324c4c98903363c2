//! The admin page's files, embedded in the binary at build time: no CDN,
//! no build step, nothing to install next to the binary.

/// `(name, content type, bytes)` for every file under `static/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("admin.html", "text/html; charset=utf-8", include_bytes!("../../static/admin.html")),
    ("admin.css", "text/css; charset=utf-8", include_bytes!("../../static/admin.css")),
    ("admin.js", "text/javascript; charset=utf-8", include_bytes!("../../static/admin.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../static/favicon.svg")),
];

/// The content type and bytes of an embedded file.
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS.iter().find(|(n, _, _)| *n == name).map(|(_, t, b)| (*t, *b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_asset_is_there() {
        for name in ["admin.html", "admin.css", "admin.js", "favicon.svg"] {
            assert!(!super::get(name).unwrap().1.is_empty(), "{name}");
        }
        assert!(super::get("../Cargo.toml").is_none());
    }
}
