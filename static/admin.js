// PayBridge admin page. Plain JavaScript, no library, no build step.
//
// SECURITY: text that came from outside (order body, attach, raw notify XML)
// only ever reaches the page through textContent / createTextNode, never as
// HTML. The Content-Security-Policy forbids inline script as a second wall.
'use strict';

const I18N = {
  en: {
    'nav.overview': 'Overview', 'nav.orders': 'Orders', 'nav.notifies': 'Notifies', 'nav.system': 'System',
    'nav.integration': 'Integration', 'nav.reconciliation': 'Reconciliation',
    'recon.day': 'Day (Beijing)', 'recon.run': 'Reconcile this day', 'recon.none': 'No day reconciled yet: the first runs after 10:00 tomorrow.',
    'recon.summary': '{p} payments ¥{fen} · {r} refunds · {d} differences', 'recon.download': 'Download WeChat\'s bill (.csv.gz)',
    'recon.state': 'Result', 'recon.ranAt': 'Last run', 'recon.runs': 'Runs', 'recon.payments': 'Payments in the bill',
    'recon.refunds': 'Refunds in the bill', 'recon.error': 'Last error', 'recon.warning': 'The bill\'s summary',
    'recon.differences': 'Differences', 'recon.noDifferences': 'No differences.', 'recon.more': '… and {n} more',
    'recon.wechat': 'WeChat', 'recon.here': 'PayBridge', 'recon.refund': 'refund {no}',
    'recon.MATCHED': 'Matched', 'recon.DIFFERENCES': 'Differences', 'recon.NO_BILL': 'No bill (nothing that day)',
    'recon.NOT_READY': 'Not ready at WeChat yet', 'recon.FAILED': 'Failed',
    'recon.ONLY_AT_WECHAT': 'Only at WeChat', 'recon.ONLY_HERE': 'Only here', 'recon.AMOUNT_MISMATCH': 'Amount differs',
    'recon.STATUS_MISMATCH': 'Status differs', 'overview.reconciliation': 'Days to check (对账)',
    'overview.reconciliationSub': '{n} of the last 30 days differ or failed', 'overview.reconciliationOk': 'all bills of the last 30 days match',
    'overview.reconciliationNone': 'no day reconciled in the last 30 days',
    'overview.refunded': 'refunded ¥{fen}', 'overview.net': 'net {amount}',
    'source.client': 'client', 'source.product': 'product {id} ×{n}', 'source.platform': 'platform {platform} order {order}',
    'source.token': 'token from {platform} for order {order}',
    'order.webhooks': 'Webhooks to platform A', 'order.resend': 'Re-send', 'order.resent': 'Queued: it goes out within a second.',
    'delivery.line': '{type} to {platform}: {state}, {n} attempts', 'delivery.last': 'last: {result} at {t}', 'delivery.next': 'next try {t}',
    'integration.intro': 'Everything platform A and mini-program B need, with this server\'s values filled in. Keys are never shown: give each platform its key from the config file.',
    'integration.api': 'API address', 'integration.bAppid': 'Mini-program B AppID', 'integration.platforms': 'Platforms ([[platforms]])',
    'integration.noPlatforms': 'No platform configured: add [[platforms]] to the config (see "Integrating platform A" in the README).',
    'integration.copy': 'Copy', 'integration.copied': 'Copied',
    'logout': 'Log out', 'sandbox.banner': 'SANDBOX: simulated WeChat Pay, no real money moves',
    'login.title': 'Sign in', 'login.password': 'Admin password', 'login.submit': 'Sign in',
    'login.wrong': 'Wrong password.', 'login.failed': 'Sign-in failed: {msg}',
    'overview.today': 'Paid today', 'overview.month': 'Paid this month', 'overview.pending': 'Awaiting payment',
    'overview.rejected': 'Rejected notifies today', 'overview.rejected30': '{n} in 30 days',
    'overview.orders': '{n} orders', 'overview.order': '1 order', 'overview.chart': 'Paid per day, last 30 days (yuan)',
    'overview.closed': '{n} closed',
    'orders.status': 'Status', 'orders.all': 'All', 'orders.from': 'From', 'orders.to': 'To',
    'orders.search': 'Search', 'orders.searchHint': 'out_trade_no, transaction_id or openid',
    'orders.apply': 'Apply', 'orders.export': 'Export CSV', 'orders.more': 'Load more', 'orders.none': 'No orders.',
    'orders.created': 'created {t}', 'orders.paid': 'paid {t}',
    'order.title': 'Order {no}', 'order.back': '← Orders', 'order.history': 'History', 'order.notifies': 'Notifies',
    'order.noNotifies': 'No notify received for this order.', 'order.notFound': 'No such order.',
    'order.archived': 'Archived', 'order.archivedNote': 'This order ended long ago and was moved to the archive: it is shown as it was, and nothing can change it.',
    'field.outTradeNo': 'Order number', 'field.status': 'Status', 'field.amount': 'Amount (yuan)',
    'field.body': 'Description', 'field.attach': 'Attach', 'field.source': 'Amount from',
    'system.products': 'Products ([[products]], reloaded on SIGHUP)', 'system.noProducts': 'No products: orders take a client amount or none.', 'field.openid': 'Payer openid',
    'field.transactionId': 'WeChat transaction', 'field.prepayId': 'Prepay id', 'field.createdAt': 'Created',
    'field.paidAt': 'Paid', 'field.timeEnd': 'WeChat payment time', 'field.lastError': 'Last error',
    'field.sandbox': 'Sandbox order', 'field.updatedAt': 'Updated',
    'notifies.none': 'No notify received yet.', 'notify.peer': 'from {peer}', 'notify.order': 'order {no}', 'notify.claims': 'claims order {no} (unverified)',
    'notify.event': 'event {id} (API v3; decrypted below)',
    'notify.byQuery': 'found by query: PayBridge asked WeChat (the notify never came)',
    'order.refunds': 'Refunds', 'field.refunded': 'Refunded', 'refund.amount': 'Amount to refund (yuan)', 'refund.reason': 'Reason (shown to the payer)',
    'refund.start': 'Refund…', 'refund.left': 'Up to ¥{amount} can be refunded.',
    'refund.badAmount': 'Enter an amount from ¥0.01 to ¥{amount}.',
    'refund.confirm': 'Refund ¥{amount} to the payer? Money that went back cannot be taken again.',
    'refund.yes': 'Yes, refund', 'refund.no': 'Cancel',
    'refund.needsLook': 'Needs a look', 'refund.tooLong': 'The reason is {bytes} bytes; WeChat takes at most 80 (26 Chinese characters).',
    'notify.unverified': 'unverified: {size} received, first KiB kept, SHA-256 {sha}…',
    'system.version': 'Version', 'system.uptime': 'Uptime', 'system.data': 'Data size', 'system.orders': 'Orders stored',
    'system.mode': 'Mode', 'system.wechat': 'WeChat Pay', 'system.appid': 'AppID', 'system.mchId': 'Merchant number',
    'system.signType': 'Signature', 'system.notifyUrl': 'Notify URL', 'system.payBase': 'Pay API',
    'system.apiVersion': 'API version', 'system.keyMode': 'Verifies WeChat with',
    'system.merchantSerial': 'Merchant certificate serial', 'system.publicKeyId': 'WeChat Pay public key',
    'system.platformCerts': 'WeChat Pay platform certificates',
    'keyMode.public_key': 'WeChat Pay public key', 'keyMode.certificates': 'Platform certificates',
    'keyMode.both': 'Public key + platform certificates (migration)', 'system.certExpires': 'expires {date}',
    'system.certSoon': 'expires {date}: within 30 days, check that PayBridge can reach WeChat',
    'system.clientAmount': 'Client may choose amount', 'system.dataDir': 'Data directory',
    'system.tls': 'HTTPS certificate', 'system.tlsOff': 'TLS is off: plain HTTP only.',
    'system.domains': 'Domains', 'system.issuer': 'Issuer', 'system.notAfter': 'Expires',
    'system.nextRenewal': 'Next renewal', 'system.lastError': 'Last error', 'system.none': 'none',
    'checkup.title': 'Credentials (paybridge doctor)', 'checkup.run': 'Check credentials', 'checkup.running': 'Checking…',
    'checkup.intro': 'Asks WeChat once per credential, creates no order, shows no secret. At most once every 10 s.',
    'checkup.fix': 'Fix', 'checkup.next': 'Next', 'checkup.summary': '{passed} passed, {failed} failed, {unproved} not proved',
    'check.config': 'Configuration', 'check.config_warning': 'Configuration warning', 'check.login': 'Mini-program login',
    'check.v2_key': 'API v2 key', 'check.v3_request': 'API v3 request signature', 'check.v3_reply': 'API v3 reply signature',
    'check.apiv3_key': 'APIv3 key', 'check.refund_certificate': 'API certificate (v2 refunds)',
    'check.refund_tls': 'Refund host (mutual TLS)', 'check.https_certificate': 'HTTPS certificate',
    'check.notify_url': 'Notify URL', 'check.notify_endpoint': 'Notify endpoint', 'check.dns': 'DNS',
    'yes': 'yes', 'no': 'no', 'error': 'Something went wrong: {msg}', 'loading': 'Loading…',
  },
  zh: {
    'nav.overview': '概览', 'nav.orders': '订单', 'nav.notifies': '支付通知', 'nav.system': '系统',
    'nav.integration': '接入', 'nav.reconciliation': '对账',
    'recon.day': '日期（北京时间）', 'recon.run': '对账', 'recon.none': '尚未对账：明天 10:00 后自动进行第一次对账。',
    'recon.summary': '{p} 笔支付 ¥{fen} · {r} 笔退款 · {d} 处差异', 'recon.download': '下载微信支付账单（.csv.gz）',
    'recon.state': '结果', 'recon.ranAt': '最近运行', 'recon.runs': '运行次数', 'recon.payments': '账单中的支付',
    'recon.refunds': '账单中的退款', 'recon.error': '最近错误', 'recon.warning': '账单汇总',
    'recon.differences': '差异', 'recon.noDifferences': '无差异。', 'recon.more': '……另有 {n} 处',
    'recon.wechat': '微信支付', 'recon.here': '本系统', 'recon.refund': '退款 {no}',
    'recon.MATCHED': '一致', 'recon.DIFFERENCES': '有差异', 'recon.NO_BILL': '无账单（当日无交易）',
    'recon.NOT_READY': '微信支付尚未生成账单', 'recon.FAILED': '失败',
    'recon.ONLY_AT_WECHAT': '仅微信支付有', 'recon.ONLY_HERE': '仅本系统有', 'recon.AMOUNT_MISMATCH': '金额不一致',
    'recon.STATUS_MISMATCH': '状态不一致', 'overview.reconciliation': '待核对天数（对账）',
    'overview.reconciliationSub': '近 30 天有 {n} 天不一致或失败', 'overview.reconciliationOk': '近 30 天的账单全部一致',
    'overview.reconciliationNone': '近 30 天尚未对账',
    'overview.refunded': '退款 ¥{fen}', 'overview.net': '净收 {amount}',
    'source.client': '客户端金额', 'source.product': '商品 {id} ×{n}', 'source.platform': '平台 {platform} 订单 {order}',
    'source.token': '平台 {platform} 签发的下单令牌，订单 {order}',
    'order.webhooks': '推送给平台 A 的通知', 'order.resend': '重新推送', 'order.resent': '已排队，一秒内发出。',
    'delivery.line': '{type} → {platform}：{state}，已尝试 {n} 次', 'delivery.last': '最近：{result}（{t}）', 'delivery.next': '下次重试 {t}',
    'integration.intro': '平台 A 与小程序 B 接入所需的全部代码，已填入本服务器的参数。密钥从不显示：请从配置文件中把各平台的密钥交给对方。',
    'integration.api': 'API 地址', 'integration.bAppid': '小程序 B 的 AppID', 'integration.platforms': '平台（[[platforms]]）',
    'integration.noPlatforms': '尚未配置平台：在配置文件中加入 [[platforms]]（见 README 的 "Integrating platform A"）。',
    'integration.copy': '复制', 'integration.copied': '已复制',
    'logout': '退出登录', 'sandbox.banner': '沙箱模式：模拟微信支付，不产生真实交易',
    'login.title': '登录', 'login.password': '管理员密码', 'login.submit': '登录',
    'login.wrong': '密码错误。', 'login.failed': '登录失败：{msg}',
    'overview.today': '今日收款', 'overview.month': '本月收款', 'overview.pending': '待支付',
    'overview.rejected': '今日被拒通知', 'overview.rejected30': '近 30 天 {n} 条',
    'overview.orders': '{n} 笔', 'overview.order': '1 笔', 'overview.chart': '近 30 天每日收款（元）', 'overview.closed': '已关闭 {n} 笔',
    'orders.status': '状态', 'orders.all': '全部', 'orders.from': '开始日期', 'orders.to': '结束日期',
    'orders.search': '搜索', 'orders.searchHint': '商户订单号、微信支付单号或 openid',
    'orders.apply': '筛选', 'orders.export': '导出 CSV', 'orders.more': '加载更多', 'orders.none': '没有订单。',
    'orders.created': '创建于 {t}', 'orders.paid': '支付于 {t}',
    'order.title': '订单 {no}', 'order.back': '← 订单列表', 'order.history': '订单历史', 'order.notifies': '支付通知',
    'order.noNotifies': '此订单尚未收到支付通知。', 'order.notFound': '没有这个订单。',
    'order.archived': '已归档', 'order.archivedNote': '此订单早已结束并已移入归档：按归档时的样子显示，不能再做任何更改。',
    'field.outTradeNo': '商户订单号', 'field.status': '状态', 'field.amount': '金额（元）',
    'field.body': '商品描述', 'field.attach': '附加数据', 'field.source': '金额来源',
    'system.products': '商品目录（[[products]]，SIGHUP 时重新加载）', 'system.noProducts': '未配置商品。', 'field.openid': '付款人 openid',
    'field.transactionId': '微信支付单号', 'field.prepayId': '预支付 ID', 'field.createdAt': '创建时间',
    'field.paidAt': '支付时间', 'field.timeEnd': '微信支付完成时间', 'field.lastError': '最近错误',
    'field.sandbox': '沙箱订单', 'field.updatedAt': '更新时间',
    'notifies.none': '尚未收到支付通知。', 'notify.peer': '来自 {peer}', 'notify.order': '订单 {no}', 'notify.claims': '声称属于订单 {no}（未通过验签）',
    'notify.event': '通知 ID {id}（API v3，下方为解密后的内容）',
    'notify.byQuery': '查询所得：未收到通知，PayBridge 主动查询微信',
    'order.refunds': '退款', 'field.refunded': '已退金额', 'refund.amount': '退款金额（元）', 'refund.reason': '退款原因（用户可见）',
    'refund.start': '退款…', 'refund.left': '最多可退 ¥{amount}。',
    'refund.badAmount': '请输入 ¥0.01 至 ¥{amount} 之间的金额。',
    'refund.confirm': '确认退款 ¥{amount} 给付款用户？退款后无法撤回。',
    'refund.yes': '确认退款', 'refund.no': '取消',
    'refund.needsLook': '需人工查看', 'refund.tooLong': '退款原因 {bytes} 字节；微信最多 80 字节（26 个汉字）。',
    'notify.unverified': '未通过验签：收到 {size}，仅保留前 1 KiB，SHA-256 {sha}…',
    'system.version': '版本', 'system.uptime': '运行时间', 'system.data': '数据大小', 'system.orders': '订单数',
    'system.mode': '模式', 'system.wechat': '微信支付', 'system.appid': 'AppID', 'system.mchId': '商户号',
    'system.signType': '签名方式', 'system.notifyUrl': '通知地址', 'system.payBase': '支付接口',
    'system.apiVersion': 'API 版本', 'system.keyMode': '验签方式',
    'system.merchantSerial': '商户证书序列号', 'system.publicKeyId': '微信支付公钥 ID',
    'system.platformCerts': '微信支付平台证书',
    'keyMode.public_key': '微信支付公钥', 'keyMode.certificates': '平台证书',
    'keyMode.both': '微信支付公钥 + 平台证书（迁移中）', 'system.certExpires': '{date} 到期',
    'system.certSoon': '{date} 到期：不足 30 天，请检查 PayBridge 能否访问微信支付',
    'system.clientAmount': '允许小程序指定金额', 'system.dataDir': '数据目录',
    'system.tls': 'HTTPS 证书', 'system.tlsOff': '未启用 TLS：仅提供 HTTP。',
    'system.domains': '域名', 'system.issuer': '签发者', 'system.notAfter': '到期时间',
    'system.nextRenewal': '下次续期', 'system.lastError': '最近错误', 'system.none': '无',
    'checkup.title': '凭据检查（paybridge doctor）', 'checkup.run': '检查凭据', 'checkup.running': '检查中…',
    'checkup.intro': '每项凭据向微信请求一次，不创建订单，不显示任何密钥。每 10 秒最多一次。',
    'checkup.fix': '修改方法', 'checkup.next': '下一步', 'checkup.summary': '通过 {passed} 项，失败 {failed} 项，未能证明 {unproved} 项',
    'check.config': '配置文件', 'check.config_warning': '配置警告', 'check.login': '小程序登录',
    'check.v2_key': 'APIv2 密钥', 'check.v3_request': 'APIv3 请求签名', 'check.v3_reply': 'APIv3 应答验签',
    'check.apiv3_key': 'APIv3 密钥', 'check.refund_certificate': '商户 API 证书（v2 退款）',
    'check.refund_tls': '退款接口（双向 TLS）', 'check.https_certificate': 'HTTPS 证书',
    'check.notify_url': '支付通知地址', 'check.notify_endpoint': '支付通知接口', 'check.dns': '域名解析',
    'yes': '是', 'no': '否', 'error': '出错了：{msg}', 'loading': '加载中…',
  },
};

const STATUS_ZH = { CREATED: '已创建', PREPAID: '待支付', PAID: '已支付', CLOSED: '已关闭',
  PARTIALLY_REFUNDED: '部分退款', REFUNDED: '已退款', PROCESSING: '退款中', SUCCESS: '成功', ABNORMAL: '退款异常',
  REFUND: '退款通知', REJECTED: '已拒绝', DUPLICATE: '重复', IGNORED: '已忽略', PENDING: '待重试', DELIVERED: '已送达', FAILED: '失败' };

const state = { lang: 'en', csrf: null, sandbox: false };

function t(key, vars) {
  let text = (I18N[state.lang] && I18N[state.lang][key]) || I18N.en[key] || key;
  for (const [k, v] of Object.entries(vars || {})) text = text.replace('{' + k + '}', String(v));
  return text;
}

function statusLabel(s) {
  return state.lang === 'zh' ? (STATUS_ZH[s] || s) : s;
}

// h('div', {class: 'x'}, 'text', child): builds elements; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return el;
}

function yuan(fen) {
  const f = Math.max(0, Math.trunc(fen || 0));
  return Math.floor(f / 100) + '.' + String(f % 100).padStart(2, '0');
}

// Paid less refunded can be below zero (today's refunds of earlier orders).
function signedYuan(fen) {
  return (fen < 0 ? '−¥' : '¥') + yuan(Math.abs(fen));
}

// Yuan from fen written as digits (in a history line), exactly, however long.
function yuanOfDigits(digits) {
  const d = digits.replace(/^0+(?=\d)/, '').padStart(3, '0');
  return d.slice(0, -2) + '.' + d.slice(-2);
}

// WeChat's own time (time_end: yyyyMMddHHmmss, already Beijing time) in the
// page's one format; anything else as it came.
function wechatTime(text) {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(text || '');
  return m ? `${m[1]}-${m[2]}-${m[3]} ${m[4]}:${m[5]}:${m[6]}` : text;
}

// A history line as stored ("1990 fen", "transaction … at 20261203015215")
// in the page's units: yuan, and dates as everywhere else.
function historyText(detail) {
  return (detail || '')
    .replace(/\b(\d{1,20}) fen\b/g, (_, n) => '¥' + yuanOfDigits(n))
    .replace(/\bat (\d{14})\b/g, (_, n) => 'at ' + wechatTime(n));
}

// Where the amount came from, in the page's language.
function sourceText(o) {
  const s = o.amountSource;
  if (!s) return o.source;
  if (s.kind === 'product') return t('source.product', { id: s.id, n: s.quantity });
  if (s.kind === 'platform' || s.kind === 'token') return t('source.' + s.kind, { platform: s.platform, order: s.orderId });
  return s.kind === 'client' ? t('source.client') : o.source;
}

// One date format everywhere, in both languages: the one the date filters
// take (YYYY-MM-DD), then the time, all in Beijing time.
let TIME = null;
function when(ms) {
  if (ms === null || ms === undefined) return '';
  TIME = TIME || new Intl.DateTimeFormat('en-CA', {
    timeZone: 'Asia/Shanghai', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  });
  const p = Object.fromEntries(TIME.formatToParts(new Date(ms)).map(x => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function duration(secs) {
  const d = Math.floor(secs / 86400), hr = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
  return (d ? d + 'd ' : '') + (d || hr ? hr + 'h ' : '') + m + 'm';
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const opts = Object.assign({ credentials: 'same-origin', headers: {} }, options || {});
  if (opts.method === 'POST') {
    opts.headers['Content-Type'] = 'application/json';
    if (state.csrf) opts.headers['X-CSRF-Token'] = state.csrf;
  }
  const response = await fetch(path, opts);
  if (response.status === 401 && path !== '/admin/api/login') {
    showLogin();
    throw new ApiError(401, 'not logged in');
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, (body.error && body.error.message) || response.statusText);
  return body;
}

// --- language -------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.lang === 'zh' ? 'zh-CN' : 'en';
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  document.getElementById('lang').textContent = state.lang === 'zh' ? 'English' : '中文';
}

function initLanguage() {
  const saved = localStorage.getItem('paybridge.lang');
  const browser = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
  state.lang = saved || (browser.toLowerCase().startsWith('zh') ? 'zh' : 'en');
  document.getElementById('lang').addEventListener('click', () => {
    state.lang = state.lang === 'zh' ? 'en' : 'zh';
    localStorage.setItem('paybridge.lang', state.lang);
    applyLanguage();
    if (state.csrf) route();
  });
  applyLanguage();
}

// --- session --------------------------------------------------------------

function showLogin() {
  state.csrf = null;
  document.getElementById('view').hidden = true;
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('login-view').hidden = false;
  document.getElementById('password').focus();
  // The login screen says SANDBOX too: /healthz tells, without a session.
  fetch('/healthz', { credentials: 'same-origin' }).then(r => r.json()).then(health => {
    const sandbox = !!health.sandbox;
    document.getElementById('sandbox-badge').hidden = !sandbox;
    document.getElementById('sandbox-banner').hidden = !sandbox;
  }).catch(() => {});
}

function showApp(session) {
  state.csrf = session.csrf;
  state.sandbox = !!session.sandbox;
  document.getElementById('sandbox-badge').hidden = !state.sandbox;
  document.getElementById('sandbox-banner').hidden = !state.sandbox;
  document.getElementById('login-view').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  document.getElementById('view').hidden = false;
  route();
}

async function login(event) {
  event.preventDefault();
  const error = document.getElementById('login-error');
  error.textContent = '';
  const password = document.getElementById('password');
  try {
    const session = await api('/admin/api/login', { method: 'POST', body: JSON.stringify({ password: password.value }) });
    password.value = '';
    showApp(session);
  } catch (e) {
    error.textContent = e.status === 401 ? t('login.wrong') : t('login.failed', { msg: e.message });
  }
}

async function logout() {
  try { await api('/admin/api/logout', { method: 'POST', body: '{}' }); } catch (e) { /* shown as login anyway */ }
  location.hash = '#/overview';
  showLogin();
}

// --- views ----------------------------------------------------------------

function view() { return document.getElementById('view'); }

function render(...children) {
  const v = view();
  v.replaceChildren(...children);
}

function stat(label, value, sub, warn, id) {
  return h('div', { class: 'card stat' + (warn ? ' warn' : ''), id },
    h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), h('div', { class: 'sub' }, sub || ''));
}

// Paid, and when anything was refunded, the refunds and what is left, side
// by side: "Paid today" alone would count money that went back.
function paidStat(id, label, paid, refunded) {
  const sub = [orderCount(paid.count)];
  if (refunded.count) {
    sub.push(' · ', t('overview.refunded', { fen: yuan(refunded.fen) }),
      h('br'), h('span', { class: 'net' }, t('overview.net', { amount: signedYuan(paid.fen - refunded.fen) })));
  }
  return stat(label, '¥' + yuan(paid.fen), sub, false, id);
}

// The days the bill was compared in the last 30: how many need a look,
// and "all match" only when some day was compared at all.
function reconciliationStat(o) {
  const n = o.reconciliationAttention;
  const sub = n > 0 ? t('overview.reconciliationSub', { n })
    : o.reconciledDays > 0 ? t('overview.reconciliationOk') : t('overview.reconciliationNone');
  return stat(t('overview.reconciliation'), String(n), sub, n > 0);
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text) el.textContent = text;
  return el;
}

// Drawn at the card's real width in CSS pixels, so labels stay 12 px on a
// phone as on a desktop instead of being scaled down with the picture.
function chart(days) {
  const main = document.querySelector('main');
  const width = Math.max(260, Math.round((main ? main.clientWidth : 600) - 60));
  const height = 170, top = 18, bottom = 22, left = 4;
  const max = Math.max(1, ...days.map(d => d.fen));
  const step = (width - left) / days.length;
  // A date label needs about 40 px: label every n-th day, always the last one.
  const every = Math.max(1, Math.ceil(44 / step));
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': t('overview.chart'), id: 'chart' });
  days.forEach((d, i) => {
    const barHeight = Math.round((height - top - bottom) * d.fen / max);
    const bar = svg('rect', { class: 'bar', x: (left + i * step + 1).toFixed(1), y: height - bottom - barHeight,
      width: Math.max(1, step - 2).toFixed(1), height: Math.max(barHeight, d.fen ? 1 : 0) });
    bar.appendChild(svg('title', {}, `${d.date}: ¥${yuan(d.fen)} (${d.count})`));
    root.appendChild(bar);
    const last = i === days.length - 1;
    if (last || ((days.length - 1 - i) % every === 0 && days.length - 1 - i >= every)) {
      const x = last ? width : left + i * step + step / 2;
      root.appendChild(svg('text', { class: 'axis', x: x.toFixed(1), y: height - 6, 'text-anchor': last ? 'end' : 'middle' },
        d.date.slice(5)));
    }
  });
  root.appendChild(svg('text', { class: 'axis', x: left, y: 12 }, '¥' + yuan(max)));
  return h('div', { class: 'card chart' }, h('div', { class: 'muted' }, t('overview.chart')), root);
}

function orderCount(n) {
  return t(n === 1 ? 'overview.order' : 'overview.orders', { n });
}

async function overview() {
  const o = await api('/admin/api/overview');
  render(
    h('div', { class: 'stats', id: 'overview' },
      paidStat('stat-today', t('overview.today'), o.today, o.refundedToday),
      paidStat('stat-month', t('overview.month'), o.month, o.refundedMonth),
      stat(t('overview.pending'), String(o.pending), t('overview.closed', { n: o.closed })),
      stat(t('overview.rejected'), String(o.rejectedNotifiesToday), t('overview.rejected30', { n: o.rejectedNotifies30Days }),
        o.rejectedNotifiesToday > 0),
      h('a', { href: '#/reconciliation', id: 'reconciliation-badge', class: 'stat-link' }, reconciliationStat(o))),
    chart(o.days));
}

function billState(s) {
  return h('span', { class: 'status ' + s }, t('recon.' + s));
}

async function runDay(day) {
  await api('/admin/api/reconciliation/' + encodeURIComponent(day) + '/run', { method: 'POST', body: '{}' });
  if (location.hash === '#/reconciliation/' + day) route();
  else location.hash = '#/reconciliation/' + day;
}

async function reconciliation() {
  const list = await api('/admin/api/reconciliation?limit=31');
  const yesterday = when(Date.now() - 86400000).slice(0, 10);
  const day = h('input', { id: 'r-day', type: 'text', inputmode: 'numeric', placeholder: 'YYYY-MM-DD',
    pattern: '\\d{4}-\\d{2}-\\d{2}', maxlength: '10', value: yesterday, 'aria-label': t('recon.day') });
  const form = h('form', { class: 'card filters', id: 'r-form' },
    h('label', { for: 'r-day' }, t('recon.day')), day, h('button', { type: 'submit', id: 'r-run' }, t('recon.run')));
  form.addEventListener('submit', ev => { ev.preventDefault(); runDay(day.value).catch(showError); });
  const rows = list.items.map(d => h('a', { class: 'row bill', href: '#/reconciliation/' + d.day, 'data-day': d.day },
    h('span', { class: 'main' }, d.day), billState(d.state),
    h('span', { class: 'meta' }, t('recon.summary', { p: d.payments, fen: yuan(d.paymentFen), r: d.refunds, d: d.differenceCount }))));
  render(h('h1', {}, t('nav.reconciliation')), form,
    rows.length ? h('div', { class: 'list', id: 'bill-days' }, rows) : h('p', { class: 'muted' }, t('recon.none')));
}

async function reconciliationDay(day) {
  const d = await api('/admin/api/reconciliation/' + encodeURIComponent(day));
  const amount = (fen, status) => [fen === null || fen === undefined ? '—' : '¥' + yuan(fen), status ? ' ' + status : ''].join('');
  const rows = d.differences.map(x => h('tr', { class: 'difference', 'data-kind': x.kind },
    h('td', {}, t('recon.' + x.kind)),
    h('td', {}, h('a', { href: '#/orders/' + encodeURIComponent(x.outTradeNo) }, x.outTradeNo),
      x.outRefundNo ? h('div', { class: 'muted' }, t('recon.refund', { no: x.outRefundNo })) : ''),
    h('td', {}, amount(x.wechatFen, x.wechatStatus)),
    h('td', {}, amount(x.localFen, x.localStatus))));
  const again = h('button', { type: 'button', id: 'r-again' }, t('recon.run'));
  again.addEventListener('click', () => runDay(d.day).catch(showError));
  render(h('h1', {}, t('nav.reconciliation') + ' ' + d.day),
    h('div', { class: 'card', id: 'bill-day' }, fields([
      ['recon.state', billState(d.state)],
      ['recon.payments', `${d.payments} · ¥${yuan(d.paymentFen)}`],
      ['recon.refunds', `${d.refunds} · ¥${yuan(d.refundFen)}`],
      ['recon.ranAt', when(d.ranAt)],
      ['recon.runs', String(d.runs)],
      ['recon.error', d.error],
      ['recon.warning', d.summaryWarning],
    ]), h('p', {}, again, ' ', h('a', { href: '/admin/api/reconciliation/' + d.day + '/bill', download: '' }, t('recon.download')))),
    h('h2', {}, t('recon.differences')),
    rows.length
      ? h('div', { class: 'card' }, h('table', { id: 'differences' },
          h('tr', {}, h('th', {}, ''), h('th', {}, t('field.outTradeNo')), h('th', {}, t('recon.wechat')), h('th', {}, t('recon.here'))),
          rows),
        d.differenceCount > rows.length ? h('p', { class: 'muted' }, t('recon.more', { n: d.differenceCount - rows.length })) : '')
      : h('p', { class: 'muted' }, t('recon.noDifferences')));
}

function statusBadge(s) {
  return h('span', { class: 'status ' + s }, statusLabel(s));
}

function orderRow(o) {
  return h('a', { class: 'row order', href: '#/orders/' + encodeURIComponent(o.outTradeNo), 'data-no': o.outTradeNo },
    h('span', { class: 'main' }, o.outTradeNo),
    h('span', { class: 'amount' }, '¥' + yuan(o.totalFee)),
    h('span', { class: 'desc' }, o.body),
    h('span', { class: 'meta' }, statusBadge(o.status), ' ',
      o.archived ? h('span', { class: 'status archived' }, t('order.archived')) : '', o.archived ? ' ' : '',
      h('span', { class: 'when' }, o.paidAt ? t('orders.paid', { t: when(o.paidAt) }) : t('orders.created', { t: when(o.createdAt) }))));
}

function queryOf(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return q.toString();
}

async function orders(params) {
  const status = h('select', { id: 'f-status' }, h('option', { value: '' }, t('orders.all')),
    ...['PAID', 'PREPAID', 'CREATED', 'CLOSED', 'PARTIALLY_REFUNDED', 'REFUNDED'].map(s => h('option', { value: s, selected: params.status === s }, statusLabel(s))));
  // Text, not type=date: the browser would show its own locale's format,
  // and the list shows YYYY-MM-DD.
  const day = (id, value) => h('input', { id, type: 'text', inputmode: 'numeric', placeholder: 'YYYY-MM-DD',
    pattern: '\\d{4}-\\d{2}-\\d{2}', maxlength: '10', value: value || '' });
  const from = day('f-from', params.from);
  const to = day('f-to', params.to);
  const q = h('input', { id: 'f-q', type: 'search', value: params.q || '', placeholder: t('orders.searchHint') });
  const apply = (e) => {
    e.preventDefault();
    location.hash = '#/orders?' + queryOf({ status: status.value, from: from.value, to: to.value, q: q.value.trim() });
  };
  const filter = queryOf({ status: params.status, from: params.from, to: params.to, q: params.q });
  const form = h('form', { class: 'filters', id: 'filters', onsubmit: apply },
    h('label', {}, t('orders.status'), status),
    h('label', {}, t('orders.from'), from),
    h('label', {}, t('orders.to'), to),
    h('label', { class: 'wide' }, t('orders.search'), q),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', id: 'f-apply' }, t('orders.apply')),
      h('a', { class: 'button', id: 'export', href: '/admin/api/export/orders.csv?' + filter, download: '' }, t('orders.export'))));
  const list = h('div', { class: 'list', id: 'orders-list' });
  const more = h('button', { class: 'ghost more', id: 'more', hidden: true }, t('orders.more'));
  render(form, list, more);

  let next = null;
  const load = async () => {
    const page = await api('/admin/api/orders?' + queryOf({ status: params.status, from: params.from, to: params.to,
      q: params.q, cursor: next }));
    for (const o of page.items) list.appendChild(orderRow(o));
    if (!list.children.length) list.appendChild(h('div', { class: 'empty' }, t('orders.none')));
    next = page.next;
    more.hidden = !next;
  };
  more.addEventListener('click', () => load().catch(showError));
  await load();
}

// Pretty-prints WeChat's flat XML as text: one field per line.
function prettyXml(raw) {
  try {
    const doc = new DOMParser().parseFromString(raw, 'application/xml');
    if (doc.getElementsByTagName('parsererror').length || !doc.documentElement) return raw;
    const lines = ['<' + doc.documentElement.nodeName + '>'];
    for (const child of doc.documentElement.children) lines.push('  <' + child.nodeName + '>' + child.textContent + '</' + child.nodeName + '>');
    lines.push('</' + doc.documentElement.nodeName + '>');
    return lines.join('\n');
  } catch (e) {
    return raw;
  }
}

function prettyJson(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch (e) {
    return raw;
  }
}

function fields(pairs) {
  return h('dl', { class: 'fields' }, ...pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .flatMap(([k, v]) => [h('dt', {}, t(k)), h('dd', {}, v)]));
}

// A verified notify links to its order; an unverified one (signature not
// checked with the merchant key) only claims one, and keeps its first KiB.
function notifyCard(n, withOrder) {
  let order = '';
  if (withOrder && n.outTradeNo) {
    order = n.verified
      ? h('a', { href: '#/orders/' + encodeURIComponent(n.outTradeNo) }, t('notify.order', { no: n.outTradeNo }))
      : h('span', { class: 'muted claim' }, t('notify.claims', { no: n.outTradeNo }));
  }
  const size = n.verified ? '' : h('div', { class: 'muted' }, t('notify.unverified', { size: bytes(n.size), sha: (n.sha256 || '').slice(0, 16) }));
  return h('div', { class: 'card notify' + (n.verified ? '' : ' unverified') },
    h('div', {}, statusBadge(n.verdict), ' ', when(n.receivedAt), ' ',
      h('span', { class: 'muted' }, n.peer ? t('notify.peer', { peer: n.peer }) : ''), ' ', order),
    h('div', { class: 'reason' }, n.reason),
    size,
    n.source === 'query' ? h('div', { class: 'by-query' }, t('notify.byQuery')) : '',
    n.eventId ? h('div', { class: 'muted event-id' }, t('notify.event', { id: n.eventId })) : '',
    // v3: the decrypted transaction says more than the encrypted envelope.
    h('pre', { class: 'xml' }, n.resource ? prettyJson(n.resource) : prettyXml(n.raw)));
}

async function orderDetail(no) {
  let o;
  try {
    o = await api('/admin/api/orders/' + encodeURIComponent(no));
  } catch (e) {
    if (e.status === 404) return render(h('p', { class: 'empty' }, t('order.notFound')));
    throw e;
  }
  render(
    h('a', { href: '#/orders' }, t('order.back')),
    h('h1', { id: 'order-title' }, t('order.title', { no: o.outTradeNo })),
    o.archived ? h('p', { class: 'card archived', id: 'order-archived' }, t('order.archivedNote')) : '',
    h('div', { class: 'card', id: 'order-fields' }, fields([
      ['field.status', statusBadge(o.status)],
      ['field.amount', '¥' + yuan(o.totalFee)],
      ['field.refunded', o.refundedFee || o.refundPendingFee
        ? '¥' + yuan(o.refundedFee) + (o.refundPendingFee ? ' (+¥' + yuan(o.refundPendingFee) + ' …)' : '') : null],
      ['field.outTradeNo', o.outTradeNo],
      ['field.body', o.body],
      ['field.attach', o.attach],
      ['field.source', sourceText(o)],
      ['field.openid', o.openid],
      ['field.transactionId', o.transactionId],
      ['field.prepayId', o.prepayId],
      ['field.createdAt', when(o.createdAt)],
      ['field.paidAt', when(o.paidAt)],
      ['field.timeEnd', wechatTime(o.timeEnd)],
      ['field.updatedAt', when(o.updatedAt)],
      ['field.lastError', o.lastError],
      ['field.sandbox', o.sandbox ? t('yes') : null],
    ])),
    h('h2', {}, t('order.history')),
    h('ol', { class: 'card history', id: 'order-history' },
      ...o.history.map(e => h('li', {}, when(e.at), ' ', h('strong', {}, e.kind), ' ', historyText(e.detail)))),
    ...refundSection(o),
    ...(o.deliveries.length ? [
      h('h2', {}, t('order.webhooks')),
      h('div', { id: 'order-deliveries' }, ...o.deliveries.map(d => deliveryCard(d, o.archived)))] : []),
    h('h2', {}, t('order.notifies')),
    h('div', { id: 'order-notifies' },
      ...(o.notifies.length ? o.notifies.map(n => notifyCard(n, false)) : [h('p', { class: 'muted' }, t('order.noNotifies'))])));
}

// Fen from what a person typed as yuan ("12", "12.3", "12.30"), exactly: no floats.
function fenOf(text) {
  const m = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(text || '');
  return m ? Number(m[1]) * 100 + Number((m[2] || '').padEnd(2, '0')) : null;
}

// Refunds: the list, and for a paid order a form whose submit asks to confirm first.
function refundSection(o) {
  const refundable = o.totalFee - o.refundedFee - o.refundPendingFee;
  const list = o.refunds.map(r => h('div', { class: 'card refund', 'data-status': r.status },
    h('div', {}, statusBadge(r.status), ' ',
      r.needsLook ? h('span', { class: 'status ABNORMAL needs-look' }, t('refund.needsLook')) : '', r.needsLook ? ' ' : '',
      h('strong', {}, '¥' + yuan(r.amount)), ' ', r.reason || ''),
    h('div', { class: 'muted' }, r.outRefundNo, ' · ', r.requestedBy, ' · ', when(r.createdAt),
      r.lastResult ? ' · ' + r.lastResult : '')));
  if (o.archived || !['PAID', 'PARTIALLY_REFUNDED'].includes(o.status) || refundable <= 0) {
    return list.length ? [h('h2', {}, t('order.refunds')), ...list] : [];
  }
  const amount = h('input', { id: 'refund-amount', inputmode: 'decimal', placeholder: yuan(refundable), 'aria-label': t('refund.amount') });
  // WeChat counts the reason in UTF-8 bytes (checked below), not characters.
  const reason = h('input', { id: 'refund-reason', placeholder: t('refund.reason'), 'aria-label': t('refund.reason') });
  const note = h('p', { class: 'error', role: 'alert' });
  const confirm = h('div', { class: 'confirm', id: 'refund-confirm', hidden: true });
  const submit = h('button', { type: 'submit', id: 'refund-submit' }, t('refund.start'));
  const form = h('form', { class: 'card', id: 'refund-form' },
    h('p', { class: 'muted' }, t('refund.left', { amount: yuan(refundable) })), amount, ' ', reason, ' ', submit, note, confirm);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const fen = fenOf(amount.value);
    note.textContent = '';
    if (!fen || fen > refundable) {
      note.textContent = t('refund.badAmount', { amount: yuan(refundable) });
      return;
    }
    const bytes = new TextEncoder().encode(reason.value).length;
    if (bytes > 80) {
      note.textContent = t('refund.tooLong', { bytes });
      return;
    }
    // The confirmation step: what will happen, and one more click.
    const yes = h('button', { type: 'button', id: 'refund-yes', class: 'danger' }, t('refund.yes'));
    const no = h('button', { type: 'button', class: 'ghost' }, t('refund.no'));
    confirm.replaceChildren(h('p', {}, t('refund.confirm', { amount: yuan(fen) })), yes, ' ', no);
    confirm.hidden = false;
    no.addEventListener('click', () => { confirm.hidden = true; });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await api('/admin/api/orders/' + encodeURIComponent(o.outTradeNo) + '/refunds',
          { method: 'POST', body: JSON.stringify({ amount: fen, reason: reason.value }) });
        route();
      } catch (e) {
        yes.disabled = false;
        confirm.hidden = true;
        note.textContent = t('error', { msg: e.message });
      }
    });
  });
  return [h('h2', {}, t('order.refunds')), ...list, form];
}

function deliveryCard(d, archived) {
  const note = h('span', { class: 'muted' });
  const card = h('div', { class: 'card delivery', 'data-state': d.state },
    h('div', {}, statusBadge(d.state), ' ',
      t('delivery.line', { type: d.type, platform: d.platform, state: d.state, n: d.attempts })),
    h('div', { class: 'muted' }, d.eventId,
      d.lastResult ? ' · ' + t('delivery.last', { result: d.lastResult, t: when(d.lastAttemptAt) }) : '',
      d.nextAt ? ' · ' + t('delivery.next', { t: when(d.nextAt) }) : ''));
  if (d.state !== 'DELIVERED' && !archived) {
    const button = h('button', { type: 'button', class: 'ghost resend' }, t('order.resend'));
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await api('/admin/api/deliveries/' + d.id + '/resend', { method: 'POST' });
        note.textContent = ' ' + t('order.resent');
      } catch (e) {
        button.disabled = false;
        showError(e);
      }
    });
    card.appendChild(h('div', {}, button, note));
  }
  return card;
}

async function integration() {
  const v = await api('/admin/api/integration');
  const file = (f) => {
    const code = h('pre', { class: 'code' }, f.text);
    const copy = h('button', { type: 'button', class: 'ghost' }, t('integration.copy'));
    copy.addEventListener('click', () => navigator.clipboard.writeText(f.text)
      .then(() => { copy.textContent = t('integration.copied'); }).catch(() => {}));
    return h('div', { class: 'card kit-file', 'data-name': f.name },
      h('div', { class: 'kit-head' }, h('strong', {}, f.name), ' ', h('span', { class: 'muted' }, f.purpose), ' ', copy), code);
  };
  render(
    h('p', { class: 'muted' }, t('integration.intro')),
    h('div', { class: 'card', id: 'integration' }, fields([
      ['integration.api', v.apiBase],
      ['integration.bAppid', v.bAppid],
    ])),
    h('h2', {}, t('integration.platforms')),
    h('div', { class: 'card', id: 'integration-platforms' }, v.platforms.length
      ? fields(v.platforms.map(p => [p.id + (p.appid ? ` (${p.appid})` : ''), p.webhookUrl]))
      : h('p', { class: 'muted' }, t('integration.noPlatforms'))),
    ...v.files.map(file));
}

async function notifies() {
  const list = h('div', { class: 'list', id: 'notifies-list' });
  const more = h('button', { class: 'ghost more', id: 'more', hidden: true }, t('orders.more'));
  render(list, more);
  let next = null;
  const load = async () => {
    const page = await api('/admin/api/notifies?' + queryOf({ cursor: next }));
    for (const n of page.items) list.appendChild(notifyCard(n, true));
    if (!list.children.length) list.appendChild(h('div', { class: 'empty' }, t('notifies.none')));
    next = page.next;
    more.hidden = !next;
  };
  more.addEventListener('click', () => load().catch(showError));
  await load();
}

async function system() {
  const s = await api('/admin/api/system');
  const tls = s.tls;
  render(
    h('div', { class: 'card', id: 'system' }, fields([
      ['system.version', s.version],
      ['system.mode', s.sandbox ? 'SANDBOX' : s.mode],
      ['system.uptime', duration(s.uptimeSecs)],
      ['system.orders', String(s.orders)],
      ['system.data', bytes(s.dataBytes)],
      ['system.dataDir', s.dataDir],
    ])),
    h('h2', {}, t('system.wechat')),
    h('div', { class: 'card', id: 'system-wechat' }, fields([
      ['system.appid', s.appid],
      ['system.mchId', s.mchId],
      ['system.apiVersion', s.apiVersion],
      ...(s.signType ? [['system.signType', s.signType]] : []),
      ...(s.keyMode ? [['system.keyMode', t('keyMode.' + s.keyMode)], ['system.merchantSerial', s.merchantSerial]] : []),
      ...(s.publicKeyId ? [['system.publicKeyId', s.publicKeyId]] : []),
      ['system.notifyUrl', s.notifyUrl],
      ['system.payBase', s.payBaseUrl],
      ['system.clientAmount', s.acceptClientAmount ? t('yes') : t('no')],
    ])),
    ...(s.platformCertificates.length ? [
      h('h2', {}, t('system.platformCerts')),
      h('div', { class: 'card', id: 'system-wechat-certificates' }, fields(s.platformCertificates.map(c => {
        const date = new Date(c.notAfter * 1000).toISOString().slice(0, 10);
        const text = t(c.expiresSoon ? 'system.certSoon' : 'system.certExpires', { date });
        return [c.serial, c.expiresSoon ? h('span', { class: 'error cert-expiring' }, text) : text];
      }))),
    ] : []),
    h('h2', {}, t('system.tls')),
    h('div', { class: 'card', id: 'system-tls' }, tls ? fields([
      ['system.domains', tls.domains.join(', ')],
      ['system.issuer', tls.certificate ? tls.certificate.issuer : t('system.none')],
      ['system.notAfter', tls.certificate ? tls.certificate.not_after : ''],
      ['system.nextRenewal', tls.next_renewal],
      ['system.lastError', tls.last_error || t('system.none')],
    ]) : h('p', { class: 'muted' }, t('system.tlsOff'))),
    h('h2', {}, t('system.products')),
    h('div', { class: 'card', id: 'system-products' }, s.products.length
      ? fields(s.products.map(p => [`${p.id} — ${p.name}`, '¥' + yuan(p.price)]))
      : h('p', { class: 'muted' }, t('system.noProducts'))),
    h('h2', {}, t('checkup.title')),
    checkupCard());
}

// "Check credentials": the doctor for the running configuration, one line
// per check. The names and headings follow the page's language; so do the
// lines, which the doctor writes in English and, for the page in 中文, in
// Chinese (detail_zh, fix_zh; English where a line has no Chinese).
function checkupCard() {
  const MARK = { passed: '✓', failed: '✗', unproved: '!' };
  const out = h('div', { id: 'checkup-result' });
  const button = h('button', { type: 'button', id: 'checkup-run' }, t('checkup.run'));
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.textContent = t('checkup.running');
    try {
      const r = await api('/admin/api/system/checkup', { method: 'POST', body: '{}' });
      const count = o => r.checks.filter(c => c.outcome === o).length;
      const zh = state.lang === 'zh';
      out.replaceChildren(
        h('ul', { class: 'checkup' }, r.checks.map(c => h('li', { class: 'check check-' + c.outcome, 'data-code': c.code },
          h('span', { class: 'mark' }, MARK[c.outcome] || '?'), ' ',
          h('strong', {}, I18N.en['check.' + c.code] ? t('check.' + c.code) : c.name), ': ',
          (zh && c.detail_zh) || c.detail,
          c.fix ? h('div', { class: 'fix muted' },
            t(c.outcome === 'failed' ? 'checkup.fix' : 'checkup.next') + ': ' + ((zh && c.fix_zh) || c.fix)) : null))),
        h('p', { class: r.failed ? 'error' : 'muted', id: 'checkup-summary' },
          t('checkup.summary', { passed: count('passed'), failed: count('failed'), unproved: count('unproved') })));
    } catch (e) {
      out.replaceChildren(h('p', { class: 'error', role: 'alert' }, t('error', { msg: e.message })));
    } finally {
      button.disabled = false;
      button.textContent = t('checkup.run');
    }
  });
  return h('div', { class: 'card', id: 'system-checkup' }, h('p', { class: 'muted' }, t('checkup.intro')), button, out);
}

function showError(e) {
  if (e.status === 401) return;
  view().appendChild(h('p', { class: 'error', role: 'alert' }, t('error', { msg: e.message })));
}

// --- routing --------------------------------------------------------------

function route() {
  if (!state.csrf) return;
  const hash = location.hash.replace(/^#\/?/, '') || 'overview';
  const [path, query] = hash.split('?');
  const parts = path.split('/');
  const params = Object.fromEntries(new URLSearchParams(query || ''));
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.route === parts[0]);
  render(h('p', { class: 'muted' }, t('loading')));
  let work;
  if (parts[0] === 'orders' && parts[1]) work = orderDetail(decodeURIComponent(parts.slice(1).join('/')));
  else if (parts[0] === 'orders') work = orders(params);
  else if (parts[0] === 'notifies') work = notifies();
  else if (parts[0] === 'system') work = system();
  else if (parts[0] === 'integration') work = integration();
  else if (parts[0] === 'reconciliation' && parts[1]) work = reconciliationDay(decodeURIComponent(parts[1]));
  else if (parts[0] === 'reconciliation') work = reconciliation();
  else work = overview();
  work.then(() => { document.body.dataset.view = hash; }).catch(showError);
}

async function start() {
  initLanguage();
  document.getElementById('login-form').addEventListener('submit', login);
  document.getElementById('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  try {
    showApp(await api('/admin/api/session'));
  } catch (e) {
    if (e.status !== 401) showLogin();
  }
}

document.addEventListener('DOMContentLoaded', start);
