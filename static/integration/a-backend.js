// Platform A's backend: create a PayBridge order, sign an order token,
// verify a webhook and a returned result (PayBridge integration kit).
// Node.js 18 or newer, no dependencies.
//
//   const pb = require('./a-backend.js')
//   const client = pb.client({ base: '__PAYBRIDGE_API__', platform: '__PLATFORM_ID__', key: process.env.PAYBRIDGE_KEY })
//   const order = await client.createOrder({ orderId: 'A-1001', amount: 1990, description: 'VIP month' })
//   // -> mini-program A: navigateToMiniProgram with extraData { outTradeNo: order.outTradeNo }
//   const token = pb.signToken(key, { platform, orderId: 'A-1002', amount: 990, description: 'Ticket',
//                                     expiresAt: Math.floor(Date.now() / 1000) + 1800 })
//   // -> mini-program A: extraData { token }
//   // Webhook endpoint: pb.verifyWebhook(key, headers, rawBody) -> event or null; answer 2xx only when handled.

const crypto = require('crypto')

function hmacHex(key, message) {
  return crypto.createHmac('sha256', key).update(message).digest('hex')
}

function sameHex(a, b) {
  const x = Buffer.from(String(a).toLowerCase())
  const y = Buffer.from(String(b).toLowerCase())
  return x.length === y.length && crypto.timingSafeEqual(x, y)
}

// The request signature: METHOD, path with query, timestamp, nonce and the
// body's hex SHA-256, one per line, each line ending in \n.
function signRequest(key, method, pathAndQuery, timestamp, nonce, body) {
  const bodyHash = crypto.createHash('sha256').update(body || '').digest('hex')
  return hmacHex(key, `${method}\n${pathAndQuery}\n${timestamp}\n${nonce}\n${bodyHash}\n`)
}

function client({ base, platform, key }) {
  async function call(method, pathAndQuery, payload) {
    const body = payload === undefined ? '' : JSON.stringify(payload)
    const timestamp = Math.floor(Date.now() / 1000)
    const nonce = crypto.randomBytes(16).toString('hex')
    const res = await fetch(base + pathAndQuery, {
      method,
      body: body || undefined,
      headers: {
        'content-type': 'application/json',
        'PayBridge-Platform': platform,
        'PayBridge-Timestamp': String(timestamp),
        'PayBridge-Nonce': nonce,
        'PayBridge-Signature': signRequest(key, method, pathAndQuery, timestamp, nonce, body),
      },
    })
    const data = await res.json()
    if (res.status >= 300) {
      const err = new Error(`${data.error.code}: ${data.error.message}`)
      err.status = res.status
      throw err
    }
    return data
  }
  return {
    createOrder: (order) => call('POST', '/platform/v1/orders', order),
    getOrder: (outTradeNo) => call('GET', '/platform/v1/orders/' + encodeURIComponent(outTradeNo)),
    closeOrder: (outTradeNo) => call('POST', '/platform/v1/orders/' + encodeURIComponent(outTradeNo) + '/close'),
    changes: (after, limit = 100) => call('GET', `/platform/v1/changes?after=${after}&limit=${limit}`),
  }
}

function b64url(text) {
  return Buffer.from(text).toString('base64url')
}

// An order token: pbt1.<base64url JSON>.<hex HMAC of everything before the last dot>.
function signToken(key, { platform, orderId, amount, description, attach = '', expiresAt, nonce }) {
  const claims = { platform, orderId, amount, description, attach, expiresAt,
    nonce: nonce || crypto.randomBytes(8).toString('hex') }
  const payload = 'pbt1.' + b64url(JSON.stringify(claims))
  return payload + '.' + hmacHex(key, payload)
}

function header(headers, name) {
  if (typeof headers.get === 'function') return headers.get(name)
  return headers[name.toLowerCase()]
}

// A webhook: HMAC(key, timestamp + "\n" + raw body), and a timestamp within 5
// minutes. Returns the event, or null. De-duplicate on event.id.
function verifyWebhook(key, headers, rawBody, nowSeconds = Math.floor(Date.now() / 1000)) {
  const timestamp = header(headers, 'paybridge-timestamp')
  const signature = header(headers, 'paybridge-signature')
  if (!timestamp || !signature || Math.abs(Number(timestamp) - nowSeconds) > 300) return null
  if (!sameHex(hmacHex(key, `${timestamp}\n${rawBody}`), signature)) return null
  return JSON.parse(rawBody)
}

// The statuses a result may carry that mean WeChat took the money. PayBridge
// signs results only for these; the check here is a second lock.
const PAID_STATUSES = ['PAID', 'PARTIALLY_REFUNDED', 'REFUNDED']

// The result mini-program B hands back: pbr1.<base64url JSON>.<hex HMAC>.
// Returns the claims, or null when the signature is wrong, the status is not
// a paid one (pass { allowUnpaid: true } to read other statuses), or, with
// maxAgeSeconds, the result was signed longer ago than that. Before you
// deliver, also compare claims.orderId and claims.amount with your own order.
function verifyResult(key, signed, { allowUnpaid = false, maxAgeSeconds, nowSeconds } = {}) {
  if (typeof signed !== 'string' || !signed.startsWith('pbr1.')) return null
  const dot = signed.lastIndexOf('.')
  const payload = signed.slice(0, dot)
  if (!sameHex(hmacHex(key, payload), signed.slice(dot + 1))) return null
  const claims = JSON.parse(Buffer.from(payload.slice(5), 'base64url').toString())
  if (!allowUnpaid && !PAID_STATUSES.includes(claims.status)) return null
  const now = nowSeconds === undefined ? Math.floor(Date.now() / 1000) : nowSeconds
  if (maxAgeSeconds !== undefined && !(now - claims.at <= maxAgeSeconds)) return null
  return claims
}

module.exports = { client, signRequest, signToken, verifyWebhook, verifyResult }
