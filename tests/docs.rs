//! The documentation stays true to the repository: every relative link in
//! the README and the manual (`static/docs/*.md`) reaches a file that exists
//! and, with a `#fragment`, a heading in it; and the configuration
//! reference's environment variables are the ones PayBridge accepts, while
//! the keys it says cannot be overridden are refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README and every Markdown file of the manual.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let manual = root().join("static/docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&manual)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 8, "the manual's pages: {pages:?}");
    docs.extend(pages);
    docs
}

/// The text outside fenced code blocks: links inside code are examples.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every `[text](target)` target in `text` (inline links and images).
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].to_owned());
        }
    }
    targets
}

/// The anchors GitHub gives a page's headings: lower case, only letters,
/// digits, spaces, `-` and `_` kept, spaces made `-`; a repeated heading
/// gets `-1`, `-2`, …
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !in_code) else { continue };
        let heading = heading.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

#[test]
fn every_relative_link_in_the_readme_and_the_manual_reaches_a_file_and_heading() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for target in link_targets(&prose(&text)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let path = if file.is_empty() { doc.clone() } else { doc.parent().unwrap().join(file) };
            checked += 1;
            if !path.exists() {
                broken.push(format!("{}: {target} (no such file)", doc.display()));
                continue;
            }
            let is_markdown = path.extension().is_some_and(|e| e == "md");
            if !fragment.is_empty() && is_markdown {
                let headings = anchors(&std::fs::read_to_string(&path).unwrap());
                if !headings.contains(fragment) {
                    broken.push(format!("{}: {target} (no such heading in {})", doc.display(), path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 60, "only {checked} links found: is the link parser still reading the documents?");
}

/// The anchor rule itself, on headings the manual links to.
#[test]
fn anchors_follow_githubs_rule() {
    let page = "# T\n## An order's life\n## `GET /pay/openid?code=CODE`\n## Admin API (`/admin/api/…`)\n\
                ```sh\n# not a heading\n```\n## The daily bill (对账)\n## Errors\n### Errors\n";
    let found = anchors(page);
    for anchor in
        ["an-orders-life", "get-payopenidcodecode", "admin-api-adminapi", "the-daily-bill-对账", "errors", "errors-1"]
    {
        assert!(found.contains(anchor), "{anchor} not in {found:?}");
    }
    assert!(!found.contains("not-a-heading"), "a comment in a code block is no heading");
}

/// A live config that loads, to which one environment variable is added.
const BASE_CONFIG: &str = r#"
data_dir = "/nonexistent/paybridge-docs-test"
[wechat]
appid = "wx1234567890abcdef"
app_secret = "docs-test-app-secret"
mch_id = "1230000109"
mch_key = "0123456789abcdef0123456789abcdef"
notify_url = "https://pay.example.com/pay/notify"
"#;

/// What loading [`BASE_CONFIG`] with `var=value` in the environment says:
/// `Ok` or the error's text.
fn load_with(var: &str, value: &str) -> Result<(), String> {
    let env = vec![(var.to_owned(), value.to_owned())];
    paybridge::config::Config::from_toml(BASE_CONFIG, Path::new("docs-test.toml"), env.into_iter())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_config_references_environment_variables_are_the_ones_paybridge_reads() {
    assert_eq!(load_with("PAYBRIDGE_LOG_FORMAT", "json"), Ok(()), "the base config loads");
    let reference = std::fs::read_to_string(root().join("static/docs/operating.md")).unwrap();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut named = 0;
    for row in reference.lines().filter(|l| l.starts_with("| `")) {
        let Some(column) = row.split('|').nth(2) else { continue };
        for var in column.split('`').filter(|w| w.starts_with("PAYBRIDGE_")) {
            named += 1;
            // Any value: a bad one is refused for its value, an unknown
            // variable for its name.
            if let Err(e) = load_with(var, "1") {
                assert!(!e.contains("unknown setting"), "{var}, in the config reference, is not read: {e}");
            }
            if column.contains("(`_FILE`)") {
                let file_var = format!("{var}_FILE");
                if let Err(e) = load_with(&file_var, secret_file.path().to_str().unwrap()) {
                    assert!(!e.contains("unknown setting"), "{file_var} is not read: {e}");
                }
            }
        }
    }
    assert!(named >= 40, "only {named} variables found in the config reference");

    // The keys the reference says cannot be overridden are refused, by name.
    for var in [
        "PAYBRIDGE_WECHAT_CLIENT_CERT_FILE",
        "PAYBRIDGE_WECHAT_CLIENT_KEY_FILE",
        "PAYBRIDGE_WECHAT_CLIENT_P12_FILE",
        "PAYBRIDGE_WECHAT_CLIENT_P12_PASSWORD",
        "PAYBRIDGE_WECHAT_SECAPI_BASE_URL",
        "PAYBRIDGE_WECHAT_SECAPI_CA_FILE",
        "PAYBRIDGE_TLS_ACME_RETRY_SCHEDULE_SECS",
    ] {
        let key = var.trim_start_matches("PAYBRIDGE_").to_lowercase();
        let key = key.split_once('_').map_or(key.clone(), |(_, k)| k.to_owned());
        assert!(reference.contains(&key), "the reference names {key}");
        let refused = load_with(var, "/etc/paybridge/x").unwrap_err();
        assert!(refused.contains("unknown setting"), "{var}: {refused}");
    }
    // And the five secrets it lists take `_FILE`.
    for var in [
        "PAYBRIDGE_WECHAT_MCH_KEY_FILE",
        "PAYBRIDGE_WECHAT_APIV3_KEY_FILE",
        "PAYBRIDGE_WECHAT_APP_SECRET_FILE",
        "PAYBRIDGE_ADMIN_PASSWORD_HASH_FILE",
        "PAYBRIDGE_METRICS_TOKEN_FILE",
    ] {
        assert!(reference.contains(var), "the reference lists {var}");
        if let Err(e) = load_with(var, secret_file.path().to_str().unwrap()) {
            assert!(!e.contains("unknown setting"), "{var}: {e}");
        }
    }
}

/// The walkthrough shown in the sandbox page is what `paybridge sandbox`
/// prints (for the addresses, login code, order number, password and paths
/// the page shows), so the page cannot drift from the banner that
/// `tests/binary.rs` pastes into a shell.
#[test]
fn the_sandbox_pages_walkthrough_is_what_the_sandbox_prints() {
    let page = std::fs::read_to_string(root().join("static/docs/sandbox.md")).unwrap();
    let shown = page.split("## The walkthrough").nth(1).unwrap().split("```text\n").nth(1).unwrap();
    let shown = shown.split("```").next().unwrap();
    let printed = paybridge::sandbox::walkthrough(
        "127.0.0.1:8080".parse().unwrap(),
        "127.0.0.1:8081".parse().unwrap(),
        "demo-SYYvNQOk",
        "DEMO1796602237",
        "v2",
        Some("hT3kPq9ZxV2mWc7L"),
        Path::new("/home/you/paybridge/paybridge-sandbox-data"),
    );
    // What differs from one run to the next: the binary's path and the day.
    let exe = std::env::current_exe().unwrap();
    let today = paybridge::store::day_string(paybridge::store::beijing_day(paybridge::pay::now_ms()));
    let printed = printed
        .replace(&format!("'{}'", exe.display()), "'/home/you/paybridge/target/release/paybridge'")
        .replace(&today, "2026-12-07");
    assert!(
        shown.starts_with(printed.trim()),
        "static/docs/sandbox.md shows another walkthrough than the sandbox prints:\n{}",
        printed.trim()
    );
    // The lines the CLI prints after it, as the page shows them.
    assert!(shown.contains("Admin page: http://127.0.0.1:8080/admin  (SANDBOX password: hT3kPq9ZxV2mWc7L)"));
}
