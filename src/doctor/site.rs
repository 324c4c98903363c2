//! What WeChat needs of this server (live mode): the certificate PayBridge
//! serves, a notify URL on https, on the configured domain, that answers
//! as PayBridge, and a domain whose addresses lead here. What cannot be
//! proved from this machine alone is said so ("!").

use std::net::IpAddr;
use std::time::Duration;

use super::{CODE_DNS, CODE_HTTPS, CODE_NOTIFY_ENDPOINT, CODE_NOTIFY_URL};
use crate::checkup::Check;
use crate::config::{Config, TlsMode};

const HTTPS: &str = "HTTPS certificate";
const NOTIFY_URL: &str = "notify_url";
const ENDPOINT: &str = "notify endpoint";
const DNS: &str = "DNS";

/// Days before the served certificate's end from which the doctor warns
/// (ACME renews 30 days before: fewer left means renewal is failing).
pub const HTTPS_WARN_DAYS: i64 = 14;

/// The site checks, for a live configuration.
pub(super) async fn check(config: &Config) -> Vec<Check> {
    vec![certificate(config), notify_url(config), endpoint(config).await, dns(config).await]
}

/// The certificate PayBridge serves, from the TLS status it keeps.
fn certificate(config: &Config) -> Check {
    let tls = &config.tls;
    if !tls.enabled() {
        return Check::unproved(
            CODE_HTTPS,
            HTTPS,
            "PayBridge serves plain HTTP ([tls] mode = \"off\"): whatever serves https in front of it is checked only \
             through the notify endpoint below",
            None,
        )
        .zh("PayBridge 只提供 HTTP（[tls] mode = \"off\"）：前面提供 https 的服务只能通过下面的支付通知地址一行检查");
    }
    let status = match crate::tls::TlsStatus::read(&config.data_dir) {
        Ok(status) => status,
        Err(_) => {
            return Check::unproved(
                CODE_HTTPS,
                HTTPS,
                format!("no certificate status in {} yet: has PayBridge run?", config.data_dir.display()),
                Some("start PayBridge, then run the doctor again".into()),
            )
            .zh(format!("{} 中还没有证书状态：PayBridge 运行过吗？", config.data_dir.display()))
            .zh_fix("启动 PayBridge，然后再运行一次 doctor")
        }
    };
    let Some(cert) = status.certificate else {
        return Check::failed(
            CODE_HTTPS,
            HTTPS,
            format!("no certificate obtained yet; last error: {}", status.last_error.as_deref().unwrap_or("none")),
            "see `paybridge cert status` and \"HTTPS on a VPS\" in the manual (ports 80/443 open, DNS pointing here)",
        )
        .zh(format!("还没有获得证书；上次的错误：{}", status.last_error.as_deref().unwrap_or("无")))
        .zh_fix("查看 `paybridge cert status` 和手册中的 \"HTTPS on a VPS\"（开放 80/443 端口，DNS 指向本机）");
    };
    let until = cert.not_after.date();
    let days_left = (cert.not_after - time::OffsetDateTime::now_utc()).whole_days();
    let missing: Vec<&String> = tls.domains.iter().filter(|d| !cert.names.contains(d)).collect();
    if tls.mode == TlsMode::SelfSigned {
        return Check::failed(
            CODE_HTTPS,
            HTTPS,
            "a self-signed certificate: WeChat's servers and client do not trust it",
            "set [tls] mode = \"acme\" (Let's Encrypt) or \"files\" with a certificate from a public CA",
        )
        .zh("自签名证书：微信的服务器和客户端都不信任它")
        .zh_fix("设置 [tls] mode = \"acme\"（Let's Encrypt），或 \"files\" 并使用公共 CA 签发的证书");
    }
    if !missing.is_empty() {
        return Check::failed(
            CODE_HTTPS,
            HTTPS,
            format!("the certificate ({}) does not name {missing:?}", cert.names.join(", ")),
            "let PayBridge obtain a certificate for every [tls] domains entry (restart it after changing them)",
        )
        .zh(format!("证书（{}）不包含 {missing:?}", cert.names.join(", ")))
        .zh_fix("让 PayBridge 为 [tls] domains 中的每个域名获取证书（修改后重启）");
    }
    match days_left {
        d if d < 0 => Check::failed(
            CODE_HTTPS,
            HTTPS,
            format!("the certificate expired on {until}"),
            "see `paybridge cert status` for the renewal's last error",
        )
        .zh(format!("证书已于 {until} 过期"))
        .zh_fix("用 `paybridge cert status` 查看续期的上次错误"),
        d if d < HTTPS_WARN_DAYS => Check::unproved(
            CODE_HTTPS,
            HTTPS,
            format!("the certificate ({}) expires on {until}, in {d} days: renewal is late", cert.issuer),
            Some("see `paybridge cert status` for the renewal's last error".into()),
        )
        .zh(format!("证书（{}）将于 {until} 过期，还剩 {d} 天：续期已经晚了", cert.issuer))
        .zh_fix("用 `paybridge cert status` 查看续期的上次错误"),
        _ => Check::passed(
            CODE_HTTPS,
            HTTPS,
            format!("issued by {} for {}, valid until {until}", cert.issuer, cert.names.join(", ")),
        )
        .zh(format!("由 {} 为 {} 签发，有效期至 {until}", cert.issuer, cert.names.join(", "))),
    }
}

/// The notify URL as WeChat requires it.
fn notify_url(config: &Config) -> Check {
    let url = &config.wechat.notify_url;
    let host = url.host_str().unwrap_or("");
    let domains = &config.tls.domains;
    if url.scheme() != "https" {
        return Check::failed(
            CODE_NOTIFY_URL,
            NOTIFY_URL,
            format!("{url} is not https://: WeChat Pay refuses it (API v3) or sends payments' results unencrypted"),
            "set wechat.notify_url to https://<your domain>/pay/notify (or leave it out with [tls] domains set)",
        )
        .zh(format!("{url} 不是 https://：微信支付会拒绝它（API v3），或以明文发送支付结果"))
        .zh_fix("把 wechat.notify_url 设为 https://<你的域名>/pay/notify（或在设置了 [tls] domains 时不填）");
    }
    if url.query().is_some() {
        return Check::failed(CODE_NOTIFY_URL, NOTIFY_URL, format!("{url} has a query string"), "remove it")
            .zh(format!("{url} 带有查询参数"))
            .zh_fix("去掉查询参数");
    }
    if config.tls.enabled() && !domains.is_empty() && !domains.iter().any(|d| d == host) {
        return Check::failed(
            CODE_NOTIFY_URL,
            NOTIFY_URL,
            format!("{url} is not on this server's domain ({})", domains.join(", ")),
            "leave wechat.notify_url out (PayBridge then uses its first domain), or put it on one of [tls] domains",
        )
        .zh(format!("{url} 不在本服务器的域名（{}）上", domains.join(", ")))
        .zh_fix("不填 wechat.notify_url（PayBridge 会用第一个域名），或让它使用 [tls] domains 中的一个域名");
    }
    Check::passed(CODE_NOTIFY_URL, NOTIFY_URL, format!("{url}: https, on this server's domain, no query string"))
        .zh(format!("{url}：https，在本服务器的域名上，没有查询参数"))
}

/// One GET of the notify URL: PayBridge answers it with its marker header.
async fn endpoint(config: &Config) -> Check {
    let url = config.wechat.notify_url.clone();
    let client = reqwest::Client::builder()
        .timeout(config.wechat.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let reply = match client {
        Ok(client) => client.get(url.clone()).send().await,
        Err(e) => {
            return Check::failed(CODE_NOTIFY_ENDPOINT, ENDPOINT, e.to_string(), "report this as a bug")
                .zh(format!("无法建立 HTTP 客户端：{e}"))
                .zh_fix("请作为缺陷报告")
        }
    };
    match reply {
        Ok(r) if r.headers().contains_key(crate::http::notify::MARKER_HEADER) => Check::passed(
            CODE_NOTIFY_ENDPOINT,
            ENDPOINT,
            format!("PayBridge answers at {url} (a GET, which changes nothing)"),
        )
        .zh(format!("PayBridge 在 {url} 应答（一个 GET 请求，不改变任何东西）")),
        Ok(r) => Check::failed(
            CODE_NOTIFY_ENDPOINT,
            ENDPOINT,
            format!("{url} answered HTTP {}, but not as PayBridge does", r.status().as_u16()),
            "make the notify URL reach PayBridge's /pay/notify (a proxy in front must pass /pay/notify through)",
        )
        .zh(format!("{url} 回复了 HTTP {}，但不是 PayBridge 的应答", r.status().as_u16()))
        .zh_fix("让通知地址到达 PayBridge 的 /pay/notify（前面的代理必须转发 /pay/notify）"),
        Err(e) => Check::failed(
            CODE_NOTIFY_ENDPOINT,
            ENDPOINT,
            format!("{url} did not answer: {}", crate::text::clip(&causes(&e), 300)),
            "WeChat must reach it the same way: check DNS, the firewall (port 443), and that the certificate is \
             valid for the name",
        )
        .zh(format!("{url} 没有应答：{}", crate::text::clip(&causes(&e), 300)))
        .zh_fix("微信也要这样访问它：检查 DNS、防火墙（443 端口），以及证书是否对该域名有效"),
    }
}

/// An error with its causes, without the URL (it is printed beside).
fn causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Whether `ip` is one of this machine's addresses: only a local address
/// can be bound.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Whether WeChat could never reach `ip`.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6.is_unicast_link_local()
        }
    }
}

/// The A/AAAA records of the notify URL's host against this machine's addresses.
async fn dns(config: &Config) -> Check {
    let url = &config.wechat.notify_url;
    let Some(host) = url.host_str() else {
        return Check::failed(CODE_DNS, DNS, format!("{url} has no host"), "set wechat.notify_url")
            .zh(format!("{url} 没有主机名"))
            .zh_fix("设置 wechat.notify_url");
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addresses: Vec<IpAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(e) => {
            return Check::failed(
                CODE_DNS,
                DNS,
                format!("{host} does not resolve here: {e}"),
                format!("add an A (and AAAA) record for {host} pointing at this server's public address"),
            )
            .zh(format!("{host} 在本机无法解析：{e}"))
            .zh_fix(format!("为 {host} 添加指向本服务器公网地址的 A（和 AAAA）记录"))
        }
    };
    let list = addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
    // An address rather than a name: nothing to resolve, and no certificate
    // from a public CA names it.
    let (named, named_zh) = match host.parse::<IpAddr>() {
        Ok(_) => (
            "the notify URL names an address, not a domain:".to_owned(),
            "通知地址用的是 IP 地址而不是域名：".to_owned(),
        ),
        Err(_) => (format!("{host} resolves to"), format!("{host} 解析为")),
    };
    if addresses.iter().all(|ip| is_private(*ip)) {
        return Check::failed(
            CODE_DNS,
            DNS,
            format!("{named} {list}: WeChat's servers cannot reach a loopback or private address"),
            format!(
                "give this server a domain whose A/AAAA records point at its public address, and use it in \
                 notify_url (now {host})"
            ),
        )
        .zh(format!("{named_zh} {list}：微信的服务器无法访问回环地址或私有地址"))
        .zh_fix(format!("给本服务器一个 A/AAAA 记录指向其公网地址的域名，并在 notify_url 中使用它（现在是 {host}）"));
    }
    let foreign: Vec<String> = addresses.iter().filter(|ip| !is_local(**ip)).map(IpAddr::to_string).collect();
    match foreign.is_empty() {
        true => Check::passed(CODE_DNS, DNS, format!("{named} {list}, addresses of this machine"))
            .zh(format!("{named_zh} {list}，是本机的地址")),
        false => Check::unproved(
            CODE_DNS,
            DNS,
            format!(
                "{named} {}, not an address of this machine (right behind NAT, a cloud's public address or a load \
                 balancer): not proved from here",
                foreign.join(", ")
            ),
            Some("the notify endpoint line shows whether the name reaches PayBridge".into()),
        )
        .zh(format!(
            "{named_zh} {}，不是本机的地址（NAT 之后、云服务器的公网地址或负载均衡时正常）：在本机无法证明",
            foreign.join(", ")
        ))
        .zh_fix("支付通知地址一行显示该域名是否到达 PayBridge"),
    }
}
