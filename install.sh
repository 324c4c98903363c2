#!/usr/bin/env bash
# install.sh: takes a fresh Debian/Ubuntu VPS to a running, supervised PayBridge
# with HTTPS, in one command. Run it again to upgrade (config and data are kept).
#
#   sudo ./install.sh --domain pay.example.com --email you@example.com
#   sudo ./install.sh --uninstall [--purge [--yes]]
#   ./install.sh --root /tmp/pb --binary target/release/paybridge ...   (lay out files only)
#
# Prerequisites: Debian 12+ or Ubuntu 22.04+ with systemd, ports 80 and 443
# free, and either a prebuilt binary (--binary, built on another machine with
# `cargo build --release`: the usual way) or, to build here, the Rust
# toolchain (https://rustup.rs), a C compiler (apt-get install build-essential)
# and about 2 GB of memory.
#
# Secrets can come from flags, from the environment (PAYBRIDGE_WECHAT_APP_SECRET,
# PAYBRIDGE_WECHAT_MCH_KEY, PAYBRIDGE_ADMIN_PASSWORD: not visible in `ps`), or from
# prompts when a terminal is attached. See README.md, "Operations".
set -euo pipefail

ROOT=""
DRY_RUN=0
UNINSTALL=0
PURGE=0
YES=0
INTERACTIVE=1
PLACEHOLDERS=0
BINARY=""
DOMAIN=""
EMAIL=""
APPID=""
APP_SECRET="${PAYBRIDGE_WECHAT_APP_SECRET:-}"
MCH_ID=""
MCH_KEY="${PAYBRIDGE_WECHAT_MCH_KEY:-}"
SIGN_TYPE="MD5"
API="v2"
APIV3_KEY="${PAYBRIDGE_WECHAT_APIV3_KEY:-}"
MERCHANT_KEY_SRC=""
MERCHANT_SERIAL=""
PUBLIC_KEY_SRC=""
PUBLIC_KEY_ID=""
PLATFORM_CERTS=0
ADMIN_PASSWORD="${PAYBRIDGE_ADMIN_PASSWORD:-}"
STAGING=0
DRAFT=""
PRODUCTS=()
PLATFORMS=()

SERVICE=paybridge
USER_NAME=paybridge
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'EOF'
Usage: install.sh [options]

Prerequisites: Debian/Ubuntu with systemd; ports 80 and 443 free; a binary
built elsewhere (--binary PATH, the usual way) or, to build here, Rust
(https://rustup.rs), a C compiler (build-essential) and ~2 GB of memory.

Install or upgrade:
  --domain NAME           domain served over HTTPS (DNS A/AAAA record must point here)
  --email ADDRESS         contact for Let's Encrypt expiry notices
  --appid ID              mini-program B's AppID
  --app-secret SECRET     mini-program B's AppSecret      (or env PAYBRIDGE_WECHAT_APP_SECRET)
  --mch-id NUMBER         WeChat Pay merchant number
  --mch-key KEY           merchant API key v2, 32 chars   (or env PAYBRIDGE_WECHAT_MCH_KEY)
  --sign-type TYPE        MD5 (default) or HMAC-SHA256
  --api VERSION           WeChat Pay API: v2 (default) or v3 (README, "WeChat Pay API v2 or v3"); with v3:
    --apiv3-key KEY         the 32-character APIv3 key       (or env PAYBRIDGE_WECHAT_APIV3_KEY)
    --merchant-key-file F   apiclient_key.pem (copied to /etc/paybridge, mode 0640)
    --merchant-serial S     the merchant API certificate's serial number
    --public-key-file F     pub_key.pem, the WeChat Pay public key (copied to /etc/paybridge)
    --public-key-id ID      its id, PUB_KEY_ID_...
    --platform-certificates verify WeChat with downloaded platform certificates (older merchants;
                            with a public key too during WeChat's migration)
  --admin-password PW     admin page password             (or env PAYBRIDGE_ADMIN_PASSWORD)
  --platform ID:WEBHOOK   a platform A whose backend signs orders (the jump payment; repeat for
                          more), e.g. --platform shop-a:https://a.example.com/paybridge/webhook;
                          its key is generated and written to the config
  --product ID:NAME:FEN   a product mini-program B may sell, its price in fen (repeat for more),
                          e.g. --product vip-month:会员月卡:1990; B then sends {"productId": "vip-month"}
  --staging               use Let's Encrypt's staging CA (untrusted certificates; for a first try)
  --binary PATH           install this prebuilt binary instead of building with cargo
  --non-interactive       never prompt; fail if something is missing

Other:
  --uninstall             remove the service and the binary (config and data are kept)
  --purge                 with --uninstall: also remove config, DATA (every order) and the user;
                          asks first, or needs --yes
  --yes                   with --purge: do not ask
  --root DIR              lay out every file under DIR; do not touch systemd or the host's users
  --dry-run               print what would be done, change nothing
  -h, --help              this help
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
warn() { echo "install.sh: warning: $*" >&2; }
say() { echo "==> $*"; }

# Runs a command, or prints it under --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

parse_args() {
    while [ $# -gt 0 ]; do
        local flag="$1" value=""
        case "$flag" in
            --*=*) value="${flag#*=}"; flag="${flag%%=*}" ;;
        esac
        case "$flag" in
            -h|--help) usage; exit 0 ;;
            --dry-run) DRY_RUN=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --yes) YES=1 ;;
            --staging) STAGING=1 ;;
            --non-interactive) INTERACTIVE=0 ;;
            --platform-certificates) PLATFORM_CERTS=1 ;;
            --root|--binary|--domain|--email|--appid|--app-secret|--mch-id|--mch-key|--sign-type|--admin-password|--product|--platform|--api|--apiv3-key|--merchant-key-file|--merchant-serial|--public-key-file|--public-key-id)
                if [ -z "$value" ]; then
                    [ $# -ge 2 ] || die "$flag needs a value"
                    value="$2"
                    shift
                fi
                case "$flag" in
                    --root) ROOT="$value" ;;
                    --binary) BINARY="$value" ;;
                    --domain) DOMAIN="$value" ;;
                    --email) EMAIL="$value" ;;
                    --appid) APPID="$value" ;;
                    --app-secret) APP_SECRET="$value" ;;
                    --mch-id) MCH_ID="$value" ;;
                    --mch-key) MCH_KEY="$value" ;;
                    --sign-type) SIGN_TYPE="$value" ;;
                    --admin-password) ADMIN_PASSWORD="$value" ;;
                    --product) PRODUCTS+=("$value") ;;
                    --platform) PLATFORMS+=("$value") ;;
                    --api) API="$value" ;;
                    --apiv3-key) APIV3_KEY="$value" ;;
                    --merchant-key-file) MERCHANT_KEY_SRC="$value" ;;
                    --merchant-serial) MERCHANT_SERIAL="$value" ;;
                    --public-key-file) PUBLIC_KEY_SRC="$value" ;;
                    --public-key-id) PUBLIC_KEY_ID="$value" ;;
                esac
                ;;
            *) usage >&2; die "unknown option $flag" ;;
        esac
        shift
    done
    [ -t 0 ] || INTERACTIVE=0
    if [ -n "$ROOT" ]; then
        ROOT="$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)"
    fi
    BIN="$ROOT/usr/local/bin/paybridge"
    CONF_DIR="$ROOT/etc/paybridge"
    CONF="$CONF_DIR/paybridge.toml"
    DATA="$ROOT/var/lib/paybridge"
    UNIT="$ROOT/etc/systemd/system/$SERVICE.service"
}

# --- checks, before anything changes -------------------------------------

check_host() {
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ] && [ "$DRY_RUN" = 0 ]; then
        die "run as root (sudo ./install.sh ...), or use --root DIR / --dry-run"
    fi
    local id="" like=""
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        id="$(. /etc/os-release && echo "${ID:-}")"
        # shellcheck disable=SC1091
        like="$(. /etc/os-release && echo "${ID_LIKE:-}")"
    fi
    case " $id $like " in
        *" debian "*|*" ubuntu "*) ;;
        *)
            if [ -n "$ROOT" ]; then
                warn "not Debian/Ubuntu ($id); continuing because of --root"
            else
                die "this installer supports Debian and Ubuntu (found: ${id:-unknown})"
            fi
            ;;
    esac
    if [ -z "$ROOT" ]; then
        if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
            [ "$DRY_RUN" = 1 ] || die "systemd is not running on this host; PayBridge is installed as a systemd service"
            warn "systemd is not running on this host; a real install needs it (this is a dry run: continuing)"
        fi
    fi
}

check_ports() {
    [ -z "$ROOT" ] || return 0
    command -v systemctl >/dev/null || return 0
    # An upgrade finds its own service on the ports.
    if systemctl is-active --quiet "$SERVICE" 2>/dev/null; then return 0; fi
    local port busy
    for port in 80 443; do
        busy="$(ss -ltnpH "sport = :$port" 2>/dev/null || true)"
        [ -z "$busy" ] || die "port $port is already in use (nginx? apache?): $busy
Stop that service first: PayBridge serves ports 80 and 443 itself."
    done
}

check_dns() {
    local resolved local_ips
    resolved="$(getent ahosts "$DOMAIN" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' ' || true)"
    if [ -z "$resolved" ]; then
        warn "$DOMAIN does not resolve yet. Create a DNS A record pointing at this server; the certificate follows once it resolves."
        return 0
    fi
    local_ips="$(hostname -I 2>/dev/null || true)"
    local ip
    for ip in $resolved; do
        case " $local_ips " in *" $ip "*) return 0 ;; esac
    done
    warn "$DOMAIN points at $resolved, but this server's addresses are: ${local_ips:-unknown}.
If this server is behind NAT that may be fine; otherwise fix the DNS record, or Let's Encrypt cannot reach it."
}

# --- values ----------------------------------------------------------------

ask() { # ask VAR "question" [secret]
    local var="$1" question="$2" secret="${3:-}" answer=""
    [ -z "${!var}" ] || return 0
    if [ "$DRY_RUN" = 1 ]; then
        # A dry run shows what would happen; it needs no secrets.
        printf -v "$var" '%s' "<$question>"
        PLACEHOLDERS=1
        return 0
    fi
    [ "$INTERACTIVE" = 1 ] || die "missing ${question} (use the flag, or run in a terminal to be asked)"
    if [ -n "$secret" ]; then
        read -r -s -p "$question: " answer; echo
    else
        read -r -p "$question: " answer
    fi
    printf -v "$var" '%s' "$answer"
}

gather() {
    ask DOMAIN "domain (e.g. pay.example.com)"
    ask EMAIL "email for Let's Encrypt"
    ask APPID "mini-program AppID"
    ask APP_SECRET "mini-program AppSecret" secret
    ask MCH_ID "WeChat Pay merchant number (mch_id)"
    case "$API" in
        v2) ask MCH_KEY "merchant API key (APIv2, 32 characters)" secret ;;
        v3)
            ask APIV3_KEY "APIv3 key (32 characters)" secret
            ask MERCHANT_KEY_SRC "path of the merchant API private key (apiclient_key.pem)"
            ask MERCHANT_SERIAL "merchant API certificate serial number (40 hex digits)"
            if [ "$PLATFORM_CERTS" = 0 ] || [ -n "$PUBLIC_KEY_SRC$PUBLIC_KEY_ID" ]; then
                ask PUBLIC_KEY_SRC "path of the WeChat Pay public key (pub_key.pem)"
                ask PUBLIC_KEY_ID "WeChat Pay public key id (PUB_KEY_ID_...)"
            fi
            ;;
        *) die "--api must be v2 or v3" ;;
    esac
    ask ADMIN_PASSWORD "admin page password (10+ characters)" secret
    [ "$PLACEHOLDERS" = 0 ] || return 0
    [[ "$DOMAIN" =~ ^[A-Za-z0-9.-]+$ ]] || die "--domain $DOMAIN is not a domain name"
    [[ "$MCH_ID" =~ ^[0-9]+$ ]] || die "--mch-id must be digits"
    if [ "$API" = v2 ]; then
        key_ok "$MCH_KEY" || die "--mch-key must be the 32-character API key (letters and digits; got $(key_shape "$MCH_KEY"))"
    else
        key_ok "$APIV3_KEY" || die "--apiv3-key must be the 32-character APIv3 key (letters and digits; got $(key_shape "$APIV3_KEY"))"
        [ -r "$MERCHANT_KEY_SRC" ] || die "--merchant-key-file $MERCHANT_KEY_SRC cannot be read"
        [[ "$MERCHANT_SERIAL" =~ ^[0-9A-Fa-f]{1,64}$ ]] || die "--merchant-serial must be the certificate's serial number (hex digits)"
        if [ -n "$PUBLIC_KEY_SRC" ]; then
            [ -r "$PUBLIC_KEY_SRC" ] || die "--public-key-file $PUBLIC_KEY_SRC cannot be read"
            [[ "$PUBLIC_KEY_ID" =~ ^PUB_KEY_ID_[0-9A-Za-z]+$ ]] || die "--public-key-id must be the PUB_KEY_ID_... id"
        fi
    fi
    [ "${#ADMIN_PASSWORD}" -ge 10 ] || die "--admin-password must be at least 10 characters"
    case "$SIGN_TYPE" in MD5|HMAC-SHA256) ;; *) die "--sign-type must be MD5 or HMAC-SHA256" ;; esac
    if [ "${#PRODUCTS[@]}" = 0 ] && [ "${#PLATFORMS[@]}" = 0 ] && [ "$INTERACTIVE" = 1 ]; then
        local answer="" source=""
        echo "Where do order amounts come from? (README, \"Amounts\")"
        echo "  1) platform A's backend signs each order (the jump payment from mini-program A)"
        echo "  2) a product catalogue in this config (mini-program B sells on its own)"
        echo "  3) both"
        read -r -p "1, 2 or 3: " source
        if [ "$source" = 1 ] || [ "$source" = 3 ]; then
            read -r -p "platforms, as id:webhook_url separated by spaces (e.g. shop-a:https://a.example.com/paybridge/webhook): " answer
            read -r -a PLATFORMS <<< "$answer"
        fi
        if [ "$source" = 2 ] || [ "$source" = 3 ]; then
            read -r -p "products mini-program B sells, as id:name:price_in_fen separated by commas (e.g. vip-month:会员月卡:1990): " answer
            IFS=',' read -r -a PRODUCTS <<< "$answer"
        fi
    fi
    local spec
    for spec in "${PRODUCTS[@]}"; do
        [[ "$spec" =~ ^[A-Za-z0-9_-]{1,32}:.+:[0-9]+$ ]] || die "--product $spec is not id:name:price_in_fen (e.g. vip-month:会员月卡:1990)"
    done
    for spec in "${PLATFORMS[@]}"; do
        [[ "$spec" =~ ^[a-z0-9_-]{1,32}:https?://[^[:space:]\"]+$ ]] || die "--platform $spec is not id:webhook_url (e.g. shop-a:https://a.example.com/paybridge/webhook; the id is 1-32 of a-z 0-9 - _)"
    done
    [ "${#PRODUCTS[@]}" -gt 0 ] || [ "${#PLATFORMS[@]}" -gt 0 ] || warn "no --platform and no --product: PayBridge will refuse every order until you add [[platforms]] or [[products]] to $CONF (see README, \"Amounts\")"
}

# Whether a WeChat Pay key (APIv2 or APIv3) is 32 letters and digits.
key_ok() {
    [[ "$1" =~ ^[A-Za-z0-9]{32}$ ]]
}

# What is wrong with a key's shape, never the key itself.
key_shape() {
    # Characters, not bytes, whatever the caller's locale.
    local LC_ALL=C.UTF-8
    local key="$1" shape
    shape="${#key} characters"
    if [[ "$key" =~ ^[[:space:]] || "$key" =~ [[:space:]]$ ]]; then shape+=", with spaces at an end"; fi
    if [[ "$key" =~ [^A-Za-z0-9[:space:]] ]]; then shape+=", not only letters and digits"; fi
    printf '%s' "$shape"
}

# A new platform key: 32 random bytes as 64 hex digits.
new_key() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# The [[platforms]] tables for the config, each with a new key.
platforms_toml() {
    local spec
    for spec in "${PLATFORMS[@]}"; do
        local key
        if [ "${MASK_KEYS:-0}" = 1 ]; then key="***"; else key="$(new_key)"; fi
        printf '\n[[platforms]]\nid = %s\nkey = "%s"\nwebhook_url = %s\n' "$(toml "${spec%%:*}")" "$key" "$(toml "${spec#*:}")"
    done
}

# The [[products]] tables for the config.
products_toml() {
    local spec rest
    for spec in "${PRODUCTS[@]}"; do
        rest="${spec%:*}"
        printf '\n[[products]]\nid = %s\nname = %s\nprice = %s\n' "$(toml "${rest%%:*}")" "$(toml "${rest#*:}")" "${spec##*:}"
    done
}

# A TOML basic string.
toml() {
    local s="${1//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# --- the paybridge user ------------------------------------------------------

ensure_user() {
    if [ -n "$ROOT" ]; then
        # useradd --root needs the account files inside ROOT.
        run mkdir -p "$ROOT/etc"
        for f in passwd group shadow gshadow; do
            if [ ! -e "$ROOT/etc/$f" ]; then
                case "$f" in
                    passwd) line="root:x:0:0:root:/root:/bin/bash" ;;
                    group) line="root:x:0:" ;;
                    shadow) line="root:*:19000:0:99999:7:::" ;;
                    gshadow) line="root:*::" ;;
                esac
                if [ "$DRY_RUN" = 0 ]; then
                    echo "$line" > "$ROOT/etc/$f"
                    case "$f" in shadow|gshadow) chmod 0600 "$ROOT/etc/$f" ;; esac
                fi
            fi
        done
    fi
    if [ "$DRY_RUN" = 0 ] && grep -q "^$USER_NAME:" "$ROOT/etc/passwd" 2>/dev/null; then
        return 0
    fi
    local args=(--system --user-group --home-dir /var/lib/paybridge --no-create-home --shell /usr/sbin/nologin)
    if [ -n "$ROOT" ]; then args+=(--root "$ROOT"); fi
    run useradd "${args[@]}" "$USER_NAME"
}

owner() { # numeric uid:gid of the paybridge user (inside ROOT)
    if [ "$DRY_RUN" = 1 ]; then echo "$USER_NAME:$USER_NAME"; return; fi
    awk -F: -v u="$USER_NAME" '$1 == u { print $3 ":" $4 }' "$ROOT/etc/passwd"
}

# --- install ------------------------------------------------------------------

# Where the binary comes from, checked before anything changes: BUILD_CMD
# (the build; empty with --binary) and BINARY_SOURCE.
BUILD_CMD=()
BINARY_SOURCE=""
check_binary() {
    BINARY_SOURCE="$BINARY"
    if [ -z "$BINARY_SOURCE" ]; then
        local cargo builder=()
        cargo="$(command -v cargo || true)"
        if [ -z "$cargo" ] && [ -n "${SUDO_USER:-}" ]; then
            # sudo resets PATH: find the invoking user's rustup toolchain and
            # build as that user, so target/ does not become root's.
            local home
            home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
            if [ -x "$home/.cargo/bin/cargo" ]; then
                cargo="$home/.cargo/bin/cargo"
                builder=(runuser -u "$SUDO_USER" -- env "PATH=$home/.cargo/bin:$PATH")
            fi
        fi
        [ -n "$cargo" ] || die "cargo not found: build on another machine and pass --binary PATH, or install Rust (https://rustup.rs) and a C compiler (apt-get install build-essential)"
        command -v cc >/dev/null || die "no C compiler (cc): apt-get install build-essential, or pass --binary PATH"
        local mem_kb
        mem_kb="$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null || echo 0)"
        if [ "${mem_kb:-0}" -lt 1800000 ]; then
            warn "this machine has $((mem_kb / 1024)) MB of memory; building needs about 2 GB (add swap, or pass --binary PATH)"
        fi
        BUILD_CMD=("${builder[@]}" "$cargo" build --release --locked --manifest-path "$SCRIPT_DIR/Cargo.toml")
        BINARY_SOURCE="$SCRIPT_DIR/target/release/paybridge"
    elif [ "$DRY_RUN" = 0 ] && [ ! -x "$BINARY_SOURCE" ]; then
        die "--binary $BINARY_SOURCE is not an executable file"
    fi
}

install_binary() {
    if [ ${#BUILD_CMD[@]} -gt 0 ]; then
        say "building PayBridge (cargo build --release; about 15 minutes the first time on 2 cores)"
        run "${BUILD_CMD[@]}"
    fi
    [ "$DRY_RUN" = 1 ] || [ -x "$BINARY_SOURCE" ] || die "$BINARY_SOURCE is not an executable"
    say "installing the binary to $BIN"
    run install -D -m 0755 -o 0 -g 0 "$BINARY_SOURCE" "$BIN"
}

# The [wechat] keys of the API in use. v3's key files are copied next to the
# config, readable by the service (root:paybridge 0640), not writable by it.
api_toml() {
    if [ "$API" = v2 ]; then
        printf 'mch_key = %s\nsign_type = %s\n' "$(toml "$MCH_KEY")" "$(toml "$SIGN_TYPE")"
        return 0
    fi
    printf 'api_version = "v3"\napiv3_key = %s\nmerchant_key_file = %s\nmerchant_serial = %s\n' \
        "$(toml "$APIV3_KEY")" "$(toml "$CONF_DIR/apiclient_key.pem")" "$(toml "$MERCHANT_SERIAL")"
    if [ -n "$PUBLIC_KEY_SRC" ]; then
        printf 'public_key_file = %s\npublic_key_id = %s\n' "$(toml "$CONF_DIR/pub_key.pem")" "$(toml "$PUBLIC_KEY_ID")"
    fi
    if [ "$PLATFORM_CERTS" = 1 ]; then
        printf 'platform_certificates = true\n'
    fi
}

install_key_files() {
    [ "$API" = v3 ] || return 0
    local gid="$1"
    say "copying the v3 key files to $CONF_DIR (mode 0640, group $USER_NAME)"
    run install -m 0640 -o 0 -g "$gid" "$MERCHANT_KEY_SRC" "$CONF_DIR/apiclient_key.pem"
    if [ -n "$PUBLIC_KEY_SRC" ]; then
        run install -m 0640 -o 0 -g "$gid" "$PUBLIC_KEY_SRC" "$CONF_DIR/pub_key.pem"
    fi
}

write_config() {
    local ids
    ids="$(owner)"
    run install -d -m 0750 -o 0 -g "${ids#*:}" "$CONF_DIR"
    if [ -e "$CONF" ]; then
        say "keeping the existing config $CONF"
        return 0
    fi
    say "writing $CONF (mode 0600, owner $USER_NAME)"
    install_key_files "${ids#*:}"
    if [ "$DRY_RUN" = 1 ]; then
        echo "would write $CONF (secrets shown as ***):"
        # Shadowed here only: the printed config never shows a secret.
        local APP_SECRET="***" MCH_KEY="***" APIV3_KEY="***" MASK_KEYS=1
        config_text | sed 's/^/    /'
        echo "    [admin]"
        echo "    password_hash = \"***\"   # from the admin password (paybridge admin set-password)"
        return 0
    fi
    local tmp
    tmp="$(mktemp)"
    # The draft holds secrets: never leave it behind, even on failure.
    DRAFT="$tmp"
    trap 'rm -f "$DRAFT"' EXIT
    chmod 0600 "$tmp"
    config_text > "$tmp"
    printf '%s\n' "$ADMIN_PASSWORD" | "$BIN" admin set-password --config "$tmp" >/dev/null
    install -m 0600 -o "${ids%:*}" -g "${ids#*:}" "$tmp" "$CONF"
    rm -f "$tmp"
}

# The config install.sh writes, from the gathered values.
config_text() {
    local staging=""
    if [ "$STAGING" = 1 ]; then
        staging="acme_directory = \"https://acme-staging-v02.api.letsencrypt.org/directory\""
    fi
    cat <<EOF
# PayBridge configuration, written by install.sh on $(date -u +%Y-%m-%d).
# Reference: README.md, "Configuration". Check it with:
#   paybridge check-config --config /etc/paybridge/paybridge.toml
data_dir = "/var/lib/paybridge"

[http]
listen = "0.0.0.0:80"

[tls]
domains = [$(toml "$DOMAIN")]
acme_contact = $(toml "$EMAIL")
listen = "0.0.0.0:443"
$staging

[wechat]
appid = $(toml "$APPID")
app_secret = $(toml "$APP_SECRET")
mch_id = $(toml "$MCH_ID")
$(api_toml)

[orders]
# The amount comes from platform A's signed orders or from the catalogue below
# (mini-program B sends a productId, PayBridge sets the price). Never let the
# mini-program choose it.
accept_client_amount = false
$(platforms_toml)
$(products_toml)
EOF
}

write_unit() {
    say "writing the systemd unit $UNIT"
    run mkdir -p "$(dirname "$UNIT")"
    if [ "$DRY_RUN" = 1 ]; then return 0; fi
    cat > "$UNIT" <<'EOF'
[Unit]
Description=PayBridge: WeChat Pay backend for mini-programs
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=paybridge
Group=paybridge
ExecStart=/usr/local/bin/paybridge serve --config /etc/paybridge/paybridge.toml
Restart=on-failure
RestartSec=5s
# SIGTERM: stop accepting, finish requests, flush the database, exit 0.
KillSignal=SIGTERM
TimeoutStopSec=30s
# `systemctl reload paybridge` re-reads the catalogue ([[products]]).
ExecReload=/bin/kill -HUP $MAINPID
Environment=PAYBRIDGE_LOG=info
# Two malloc arenas instead of 16 on a 2-core server: memory that closed
# connections used is reused instead of spread over idle arenas (measured:
# 54 MiB instead of 89 MiB after repeated rounds of 1,000 TLS connections).
Environment=MALLOC_ARENA_MAX=2
# Room for [http] max_connections on both listeners (2 x 2048 by default),
# the metrics listener, the database and WeChat calls.
LimitNOFILE=8192

# Bind 80 and 443 without root.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE

# Hardening: the service sees a read-only system and writes only its data.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0077
ReadWritePaths=/var/lib/paybridge
ReadOnlyPaths=/etc/paybridge

[Install]
WantedBy=multi-user.target
EOF
    chmod 0644 "$UNIT"
}

start_service() {
    if [ -n "$ROOT" ]; then
        say "files laid out under $ROOT (systemd not touched)"
        return 0
    fi
    run systemctl daemon-reload
    run systemctl enable "$SERVICE"
    run systemctl restart "$SERVICE"
    [ "$DRY_RUN" = 0 ] || return 0
    say "waiting for PayBridge to answer"
    local trusted="a trusted certificate" check
    if [ "$STAGING" = 1 ]; then trusted="a staging (untrusted) certificate"; fi
    read -r -a check <<< "$(https_check)"
    local i
    for i in $(seq 1 60); do
        if "${check[@]}" >/dev/null 2>&1; then
            say "PayBridge is up with $trusted."
            return 0
        fi
        if ! systemctl is-active --quiet "$SERVICE"; then
            journalctl -u "$SERVICE" -n 30 --no-pager >&2 || true
            die "the service stopped; see the log above (journalctl -u $SERVICE)"
        fi
        [ "$i" != 60 ] && sleep 2
    done
    warn "PayBridge runs, but HTTPS does not answer with a trusted certificate yet.
Watch: journalctl -u $SERVICE -f    and: paybridge cert status --config /etc/paybridge/paybridge.toml"
}

# The command that checks PayBridge answers over HTTPS on this host. Staging
# certificates are trusted by no one: with --staging it does not wait for trust.
https_check() {
    local insecure=""
    if [ "$STAGING" = 1 ]; then insecure="--insecure "; fi
    echo "curl -fsS ${insecure}--max-time 2 --resolve ${DOMAIN}:443:127.0.0.1 https://${DOMAIN}/healthz"
}

do_install() {
    check_host
    check_ports
    if [ -z "$DOMAIN" ] && [ -e "$CONF" ]; then
        DOMAIN="$(awk -F'"' '/^domains/ { print $2; exit }' "$CONF")"
    fi
    # Every value and file is checked before anything on the host changes.
    [ -e "$CONF" ] || gather
    check_binary
    [ -z "$DOMAIN" ] || check_dns
    ensure_user
    local ids
    ids="$(owner)"
    install_binary
    write_config
    say "data directory $DATA (mode 0700, owner $USER_NAME)"
    run install -d -m 0700 -o "${ids%:*}" -g "${ids#*:}" "$DATA"
    write_unit
    start_service
    echo
    if [ "$DRY_RUN" = 1 ]; then
        echo "Dry run: nothing was changed."
        return 0
    fi
    echo "PayBridge is installed."
    echo "  admin page:   https://${DOMAIN:-<your domain>}/admin"
    echo "  HTTPS check:  $(https_check)"
    echo "  logs:         journalctl -u $SERVICE -f"
    echo "  certificate:  paybridge cert status --config /etc/paybridge/paybridge.toml"
    echo "  upgrade:      run this script again (config and data are kept)"
    local spec
    for spec in "${PLATFORMS[@]}"; do
        echo "  platform ${spec%%:*}: its key is in $CONF_DIR/paybridge.toml ([[platforms]] key); give it to"
        echo "                company A over a safe channel (README, \"Integrating platform A\")"
    done
}

do_uninstall() {
    check_host
    # A purge is confirmed before anything is removed: a refusal changes nothing.
    if [ "$PURGE" = 1 ] && [ "$YES" = 0 ] && [ "$DRY_RUN" = 0 ]; then
        [ "$INTERACTIVE" = 1 ] || die "--purge deletes every order in $DATA: add --yes to confirm (take a backup first: paybridge backup)"
        local answer=""
        read -r -p "Delete $DATA (every order and notify) and $CONF_DIR for good? Type 'delete' to confirm: " answer
        [ "$answer" = delete ] || die "nothing deleted"
    fi
    if [ -z "$ROOT" ]; then
        run systemctl disable --now "$SERVICE" || true
    fi
    say "removing $UNIT and $BIN"
    run rm -f "$UNIT" "$BIN"
    if [ -z "$ROOT" ]; then run systemctl daemon-reload; fi
    if [ "$PURGE" = 1 ]; then
        say "purging $CONF_DIR, $DATA and the $USER_NAME user"
        run rm -rf "$CONF_DIR" "$DATA"
        if grep -q "^$USER_NAME:" "$ROOT/etc/passwd" 2>/dev/null; then
            if [ -n "$ROOT" ]; then run userdel --root "$ROOT" "$USER_NAME"; else run userdel "$USER_NAME"; fi
        fi
    else
        say "kept $CONF_DIR and $DATA (use --purge to remove them)"
    fi
}

main() {
    parse_args "$@"
    if [ "$UNINSTALL" = 1 ]; then do_uninstall; else do_install; fi
}

main "$@"
