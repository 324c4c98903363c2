//! install.sh in `--root` mode: every file, mode and owner; the unit checked
//! by `systemd-analyze verify`; the script by shellcheck; upgrades keep the
//! config; `--dry-run` changes nothing; `--uninstall` keeps data unless purged.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/install.sh");
const BINARY: &str = env!("CARGO_BIN_EXE_paybridge");

/// install.sh into `root`, never prompting, with our binary.
fn base_args(root: &Path) -> Vec<&str> {
    vec![
        SCRIPT,
        "--root",
        root.to_str().unwrap(),
        "--binary",
        BINARY,
        "--non-interactive",
        "--domain",
        "pay.example.com",
    ]
}

fn install(root: &Path, extra: &[&str]) -> Output {
    let mut args = base_args(root);
    args.extend_from_slice(&[
        "--email",
        "ops@example.com",
        "--appid",
        "wxd930ea5d5a258f4f",
        "--mch-id",
        "10000100",
        "--sign-type",
        "HMAC-SHA256",
    ]);
    args.extend_from_slice(extra);
    Command::new("bash")
        .args(&args)
        // Secrets through the environment, as the README recommends.
        .env("PAYBRIDGE_WECHAT_APP_SECRET", "app \"secret\" \\ with quotes")
        .env("PAYBRIDGE_WECHAT_MCH_KEY", common::MCH_KEY)
        .env("PAYBRIDGE_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "install.sh failed:\n{text}");
    text
}

/// (mode, uid, gid) of a path.
fn stat(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// The paybridge user's uid and gid inside the root.
fn paybridge_ids(root: &Path) -> (u32, u32) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line = passwd.lines().find(|l| l.starts_with("paybridge:")).expect("the paybridge user exists");
    let fields: Vec<&str> = line.split(':').collect();
    assert_eq!(fields[6], "/usr/sbin/nologin");
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

#[test]
fn install_lays_out_every_file_with_its_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let products = [
        "--product",
        "vip-month:会员月卡:1990",
        "--product",
        "lesson:体验课: \"一节\":990",
        "--platform",
        "shop-a:https://a.example.com/paybridge/webhook",
    ];
    let text = ok(&install(&root, &products));
    assert!(text.contains("https://pay.example.com/admin"), "{text}");
    let check =
        "HTTPS check:  curl -fsS --max-time 2 --resolve pay.example.com:443:127.0.0.1 https://pay.example.com/healthz";
    assert!(text.contains(check), "a trusted certificate is checked as such: {text}");
    let (uid, gid) = paybridge_ids(&root);
    assert!(uid > 0 && uid < 1000, "a system user: {uid}");

    assert_eq!(stat(&root.join("usr/local/bin/paybridge")), (0o755, 0, 0));
    assert_eq!(stat(&root.join("etc/paybridge")), (0o750, 0, gid));
    assert_eq!(stat(&root.join("etc/paybridge/paybridge.toml")), (0o600, uid, gid));
    assert_eq!(stat(&root.join("var/lib/paybridge")), (0o700, uid, gid));
    assert_eq!(stat(&root.join("etc/systemd/system/paybridge.service")), (0o644, 0, 0));
    assert_eq!(std::fs::read(root.join("usr/local/bin/paybridge")).unwrap(), std::fs::read(BINARY).unwrap());

    // The config is valid, holds what was given, and only a hash of the password.
    let config_path = root.join("etc/paybridge/paybridge.toml");
    let config = paybridge::config::Config::load(&config_path).unwrap();
    assert_eq!(config.tls.domains, ["pay.example.com"]);
    assert_eq!(config.wechat.app_secret.expose(), "app \"secret\" \\ with quotes");
    assert!(matches!(
        config.wechat.api,
        paybridge::config::PayApi::V2 { sign_type: paybridge::wechat::sign::SignType::HmacSha256, .. }
    ));
    assert_eq!(config.wechat.notify_url.as_str(), "https://pay.example.com/pay/notify");
    assert!(!config.orders.accept_client_amount);
    // A config that takes real payments safely: the catalogue sets the amounts.
    let catalogue: Vec<_> = config.products.all().iter().map(|p| (p.id.as_str(), p.name.as_str(), p.price)).collect();
    assert_eq!(catalogue, [("vip-month", "会员月卡", 1990), ("lesson", "体验课: \"一节\"", 990)]);
    // And platform A, with a fresh key that is written to the config only.
    let platform = config.platforms.get("shop-a").expect("the platform");
    assert_eq!(platform.webhook_url.as_str(), "https://a.example.com/paybridge/webhook");
    let key = platform.key.expose();
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "a 256-bit key");
    assert!(!text.contains(key), "the key is not printed");
    assert!(text.contains("platform shop-a: its key is in"), "{text}");
    let hash = config.admin.password_hash.clone().expect("a password hash");
    assert!(paybridge::admin::auth::verify_password(common::ADMIN_PASSWORD, &hash));
    let raw = std::fs::read_to_string(&config_path).unwrap();
    assert!(!raw.contains(common::ADMIN_PASSWORD), "never the password itself");
    let check =
        Command::new(BINARY).args(["check-config", "--config", config_path.to_str().unwrap()]).output().unwrap();
    let report = ok(&check);
    assert!(report.contains("config OK") && !report.contains(common::MCH_KEY), "{report}");

    // The unit: hardened, binds 80/443 without root, and systemd accepts it.
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/paybridge.service")).unwrap();
    for line in [
        "User=paybridge",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "Environment=MALLOC_ARENA_MAX=2",
        "LimitNOFILE=8192",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/paybridge",
        "ExecStart=/usr/local/bin/paybridge serve --config /etc/paybridge/paybridge.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing from the unit");
    }
    // verify checks that ExecStart exists on this host: point it at the laid-out binary.
    let checked = dir.path().join("paybridge.service");
    let binary = root.join("usr/local/bin/paybridge");
    std::fs::write(
        &checked,
        unit.replace("ExecStart=/usr/local/bin/paybridge", &format!("ExecStart={}", binary.display())),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze").args(["verify", checked.to_str().unwrap()]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert_eq!(String::from_utf8_lossy(&verify.stderr), "", "systemd-analyze warns");
}

#[test]
fn install_script_passes_shellcheck() {
    let out = Command::new("shellcheck")
        .args(["-S", "warning", SCRIPT])
        .output()
        .expect("shellcheck (bash .ci/run installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn reinstall_upgrades_the_binary_and_keeps_config_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    ok(&install(&root, &[]));
    let config = std::fs::read(root.join("etc/paybridge/paybridge.toml")).unwrap();
    std::fs::write(root.join("var/lib/paybridge/orders-live-here"), b"data").unwrap();
    std::fs::write(root.join("usr/local/bin/paybridge"), b"an old release").unwrap();

    let text = ok(&install(&root, &["--appid", "wx0000000000000000", "--domain", "other.example.com"]));
    assert!(text.contains("keeping the existing config"), "{text}");
    assert_eq!(std::fs::read(root.join("etc/paybridge/paybridge.toml")).unwrap(), config, "config untouched");
    assert_eq!(std::fs::read(root.join("var/lib/paybridge/orders-live-here")).unwrap(), b"data");
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/paybridge")).unwrap(),
        std::fs::read(BINARY).unwrap(),
        "upgraded"
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(passwd.lines().filter(|l| l.starts_with("paybridge:")).count(), 1, "one user");
}

#[test]
fn dry_run_changes_nothing_and_uninstall_keeps_data_unless_purged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let text = ok(&install(&root, &["--dry-run", "--platform", "shop-a:https://a.example.com/hook"]));
    assert!(text.contains("would"), "{text}");
    // The config it would write, with every secret masked.
    assert!(text.contains("    appid = \"wxd930ea5d5a258f4f\"") && text.contains("    mch_key = \"***\""), "{text}");
    assert!(text.contains("    app_secret = \"***\"") && text.contains("    key = \"***\""), "{text}");
    assert!(!text.contains(common::MCH_KEY) && !text.contains("with quotes"), "a secret was printed: {text}");
    assert!(!text.contains(common::ADMIN_PASSWORD), "{text}");
    // Without any secret at all, a dry run still shows the plan.
    let mut bare =
        vec![SCRIPT, "--root", root.to_str().unwrap(), "--dry-run", "--binary", env!("CARGO_BIN_EXE_paybridge")];
    bare.extend_from_slice(&["--non-interactive"]);
    let out = Command::new("bash").args(&bare).env_remove("PAYBRIDGE_WECHAT_MCH_KEY").output().unwrap();
    let text = ok(&out);
    assert!(text.contains("would write") && text.contains("nothing was changed"), "{text}");
    assert!(walk(&root).is_empty(), "a bare dry run wrote nothing");
    let left: Vec<_> = walk(&root);
    assert!(left.is_empty(), "--dry-run wrote {left:?}");

    ok(&install(&root, &[]));
    let uninstall = |extra: &[&str]| {
        let mut args = vec![SCRIPT, "--root", root.to_str().unwrap(), "--uninstall"];
        args.extend_from_slice(extra);
        Command::new("bash").args(&args).output().unwrap()
    };
    ok(&uninstall(&[]));
    assert!(!root.join("etc/systemd/system/paybridge.service").exists());
    assert!(!root.join("usr/local/bin/paybridge").exists());
    assert!(root.join("etc/paybridge/paybridge.toml").exists(), "config kept");
    assert!(root.join("var/lib/paybridge").exists(), "data kept");
    // Purging deletes payment data: never without a confirmation, and a
    // refusal removes nothing at all, not even the unit or the binary.
    ok(&install(&root, &[]));
    let refused = uninstall(&["--purge"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(root.join("var/lib/paybridge").exists(), "nothing deleted unconfirmed");
    assert!(root.join("etc/systemd/system/paybridge.service").exists(), "the unit is kept when a purge is refused");
    assert!(root.join("usr/local/bin/paybridge").exists(), "the binary is kept when a purge is refused");
    ok(&uninstall(&["--purge", "--yes"]));
    assert!(!root.join("etc/paybridge").exists() && !root.join("var/lib/paybridge").exists());
    assert!(!std::fs::read_to_string(root.join("etc/passwd")).unwrap().lines().any(|l| l.starts_with("paybridge:")));
}

/// Let's Encrypt's staging certificates are trusted by nobody: the check
/// install.sh waits on (and prints) does not wait for trust that never comes.
#[test]
fn staging_does_not_wait_for_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let text = ok(&install(&root, &["--staging"]));
    assert!(text.contains("HTTPS check:  curl -fsS --insecure --max-time 2"), "{text}");
    let config = std::fs::read_to_string(root.join("etc/paybridge/paybridge.toml")).unwrap();
    assert!(config.contains("acme-staging-v02.api.letsencrypt.org"), "{config}");
}

#[test]
fn a_malformed_product_is_refused_and_no_config_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = install(&root, &["--product", "vip month:x:1990"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--product vip month:x:1990") && err.contains("id:name:price_in_fen"), "{err}");
    assert!(!root.join("etc/paybridge/paybridge.toml").exists());
    for bad in ["Shop-A:https://a.example.com/hook", "shop-a", "shop-a:ftp://a.example.com/hook"] {
        let out = install(&root, &["--platform", bad]);
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--platform {bad}")) && err.contains("id:webhook_url"), "{err}");
        assert!(!root.join("etc/paybridge/paybridge.toml").exists());
    }
}

/// Asked in a terminal, install.sh asks where amounts come from and writes
/// a config that takes real payments safely from that source.
#[test]
fn it_asks_where_amounts_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut args: Vec<&str> = base_args(&root).into_iter().filter(|a| *a != "--non-interactive").collect();
    args.extend_from_slice(&["--email", "ops@example.com", "--appid", "wxd930ea5d5a258f4f", "--mch-id", "10000100"]);
    // In a terminal (util-linux `script` gives it one), as a merchant runs it.
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    let mut child = Command::new("script")
        .args(["-qec", &format!("bash {}", quoted.join(" ")), "/dev/null"])
        .env("PAYBRIDGE_WECHAT_APP_SECRET", "secret")
        .env("PAYBRIDGE_WECHAT_MCH_KEY", common::MCH_KEY)
        .env("PAYBRIDGE_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // 3: both; then the platforms, then the products.
    let answers = "3\nshop-a:https://a.example.com/hook shop-b:https://b.example.com/hook\nlesson:体验课:990\n";
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), answers.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = ok(&out);
    assert!(text.contains("Where do order amounts come from?"), "{text}");
    let config = paybridge::config::Config::load(&root.join("etc/paybridge/paybridge.toml")).unwrap();
    let ids: Vec<_> = config.platforms.all().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["shop-a", "shop-b"]);
    assert_ne!(config.platforms.all()[0].key, config.platforms.all()[1].key, "a key of its own each");
    assert_eq!(config.products.get("lesson").unwrap().price, 990);
    assert!(!config.orders.accept_client_amount);
}

#[test]
fn missing_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = Command::new("bash").args(base_args(&root)).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing email"), "{err}");
}

/// A v3 merchant: the key files are copied next to the config, readable by
/// the service and not writable by it, and the config checks out; a wrong
/// APIv3 key or an unreadable key file stops before anything is written.
#[test]
fn a_v3_merchant_installs_with_its_key_files() {
    use paybridge::sandbox::v3 as sim;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = (dir.path().join("apiclient_key.pem"), dir.path().join("pub_key.pem"));
    std::fs::write(&key, sim::MERCHANT_PRIVATE_KEY).unwrap();
    std::fs::write(&public, sim::WECHATPAY_PUBLIC_KEY).unwrap();
    let v3 = |root: &Path, apiv3_key: &str, key_file: &Path| {
        let mut args = base_args(root);
        let (key_file, public) = (key_file.to_str().unwrap().to_owned(), public.to_str().unwrap().to_owned());
        let extra = [
            "--email",
            "ops@example.com",
            "--appid",
            "wxd930ea5d5a258f4f",
            "--mch-id",
            "1900009191",
            "--api",
            "v3",
            "--merchant-key-file",
            &key_file,
            "--merchant-serial",
            sim::MERCHANT_SERIAL,
            "--public-key-file",
            &public,
            "--public-key-id",
            sim::WECHATPAY_PUBLIC_KEY_ID,
            "--platform",
            "shop-a:https://a.example.com/paybridge/webhook",
        ];
        args.extend_from_slice(&extra);
        Command::new("bash")
            .args(&args)
            .env("PAYBRIDGE_WECHAT_APP_SECRET", "app-secret")
            .env("PAYBRIDGE_WECHAT_APIV3_KEY", apiv3_key)
            .env("PAYBRIDGE_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
            .output()
            .unwrap()
    };
    let root = dir.path().join("root");
    let text = ok(&v3(&root, sim::APIV3_KEY, &key));
    assert!(!text.contains(sim::APIV3_KEY), "{text}");
    let (_, gid) = paybridge_ids(&root);
    for name in ["apiclient_key.pem", "pub_key.pem"] {
        assert_eq!(stat(&root.join("etc/paybridge").join(name)), (0o640, 0, gid), "{name}");
    }
    let config_path = root.join("etc/paybridge/paybridge.toml");
    let config = paybridge::config::Config::load(&config_path).unwrap();
    let paybridge::config::PayApi::V3(keys) = &config.wechat.api else { panic!("a v3 config") };
    assert_eq!(keys.key_mode_code(), "public_key");
    assert_eq!(keys.merchant_key_file.as_deref(), Some(root.join("etc/paybridge/apiclient_key.pem").as_path()));
    let report =
        ok(&Command::new(BINARY).args(["check-config", "--config", config_path.to_str().unwrap()]).output().unwrap());
    assert!(report.contains("api_version = \"v3\"") && !report.contains(sim::APIV3_KEY), "{report}");

    let short = &sim::APIV3_KEY[..31];
    let chinese = format!("{}密钥", &sim::APIV3_KEY[..28]);
    let spaced = format!(" {}", &sim::APIV3_KEY[..31]);
    for (apiv3_key, key_file, error) in [
        ("too-short", key.as_path(), "--apiv3-key must be the 32-character APIv3 key"),
        (short, key.as_path(), "(letters and digits; got 31 characters)"),
        (chinese.as_str(), key.as_path(), "got 30 characters, not only letters and digits"),
        (spaced.as_str(), key.as_path(), "got 32 characters, with spaces at an end"),
        (sim::APIV3_KEY, Path::new("/nonexistent/apiclient_key.pem"), "cannot be read"),
    ] {
        let root = dir.path().join("refused");
        let out = v3(&root, apiv3_key, key_file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(error), "{err}");
        assert!(!err.contains(apiv3_key) || apiv3_key == "too-short", "the key is never printed: {err}");
        // Refused before anything changed: no user, no binary, no config.
        assert!(walk(&root).is_empty(), "{apiv3_key}: install.sh changed {:?} before refusing", walk(&root));
    }
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path());
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// Under `sudo`, PATH no longer has the invoking user's `~/.cargo/bin`:
/// install.sh finds that user's cargo and builds as that user, not as root.
#[test]
fn under_sudo_the_invoking_users_cargo_builds_as_that_user() {
    let home = std::env::var("HOME").unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let cargo = format!("{home}/.cargo/bin/cargo");
    assert!(Path::new(&cargo).exists(), "this machine's Rust toolchain is in {cargo}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut args = base_args(&root);
    args.retain(|a| *a != "--binary" && !a.ends_with("/paybridge"));
    args.extend_from_slice(&["--email", "ops@example.com", "--appid", "wxd930ea5d5a258f4f", "--mch-id", "10000100"]);
    args.push("--dry-run");
    let out = Command::new("bash")
        .args(&args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("SUDO_USER", user.trim())
        .env("PAYBRIDGE_WECHAT_APP_SECRET", "s")
        .env("PAYBRIDGE_WECHAT_MCH_KEY", common::MCH_KEY)
        .env("PAYBRIDGE_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .output()
        .unwrap();
    let text = ok(&out);
    let expected = format!("would run: runuser -u {} -- env PATH={home}/.cargo/bin:", user.trim());
    assert!(text.contains(&expected) && text.contains(&format!("{cargo} build --release --locked")), "{text}");
}

/// Without --root and without systemd running (as in this test's container,
/// or on a laptop), a dry run still shows the whole plan and the config, and
/// changes nothing.
#[test]
fn a_dry_run_works_without_systemd() {
    let out = Command::new("bash")
        .args([
            SCRIPT,
            "--dry-run",
            "--non-interactive",
            "--binary",
            BINARY,
            "--domain",
            "pay.example.com",
            "--email",
            "ops@example.com",
            "--appid",
            "wxd930ea5d5a258f4f",
            "--mch-id",
            "10000100",
        ])
        .env("PAYBRIDGE_WECHAT_APP_SECRET", "s")
        .env("PAYBRIDGE_WECHAT_MCH_KEY", common::MCH_KEY)
        .env("PAYBRIDGE_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.contains("would write /etc/paybridge/paybridge.toml (secrets shown as ***)"), "{text}");
    assert!(text.contains("would run: systemctl enable paybridge"), "{text}");
    assert!(text.contains("Dry run: nothing was changed."), "{text}");
    assert!(!text.contains(common::MCH_KEY), "{text}");
}
