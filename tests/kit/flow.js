// Drives the integration kit's JavaScript against a running PayBridge (live
// mode on the WeChat Pay simulator), as tests/kit.rs starts it: mini-program
// B's pay page and A's return handler with a stub `wx`, and A's backend
// example creating orders, signing a token and verifying real webhooks.
// Prints one "OK <what>" line per check; any failure exits non-zero.

const assert = require('assert/strict')
const http = require('http')
const path = require('path')

const { KIT_DIR, BASE, SIM, KEY, PLATFORM, B_APPID, HOOK_PORT } = process.env
const backend = require(path.join(KIT_DIR, 'a-backend.js'))
const { createPayFlow } = require(path.join(KIT_DIR, 'b-pay.js'))
const aMini = require(path.join(KIT_DIR, 'a-miniprogram.js'))

// A's webhook endpoint, written with the kit's verifyWebhook.
const events = []
const server = http.createServer((req, res) => {
  let body = ''
  req.on('data', (chunk) => { body += chunk })
  req.on('end', () => {
    const event = backend.verifyWebhook(KEY, req.headers, body)
    events.push({ verified: !!event, event })
    res.writeHead(event ? 200 : 401).end()
  })
})

let codes = 0
// A stub `wx` for mini-program B: real HTTP to PayBridge; the payment is made
// in the simulator as WeChat would, or cancelled, or failed.
function stubWx(payment) {
  const calls = { back: null, unifiedOrder: null }
  const wx = {
    login: ({ success }) => success({ code: `kit-${process.pid}-${codes++}` }),
    request: ({ url, method, data, success, fail }) => {
      fetch(url, { method, body: method === 'GET' ? undefined : JSON.stringify(data),
        headers: { 'content-type': 'application/json' } })
        .then(async (res) => {
          const json = await res.json()
          if (url.endsWith('/pay/unifiedOrder') && res.status === 200) calls.unifiedOrder = json
          success({ statusCode: res.status, data: json })
        })
        .catch((e) => fail({ errMsg: 'request:fail ' + e.message }))
    },
    requestPayment: (params) => {
      assert.ok(params.paySign && params.package.startsWith('prepay_id='), 'signed payment parameters')
      if (payment === 'cancel') return params.fail({ errMsg: 'requestPayment:fail cancel' })
      if (payment === 'fail') return params.fail({ errMsg: 'requestPayment:fail (-1) system error' })
      fetch(SIM + '/sandbox/pay', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ out_trade_no: calls.unifiedOrder.outTradeNo }) })
        .then((res) => (res.status === 200 ? params.success({ errMsg: 'requestPayment:ok' })
          : params.fail({ errMsg: 'requestPayment:fail ' + res.status })))
    },
    navigateBackMiniProgram: ({ extraData, success }) => { calls.back = extraData; success({}) },
  }
  return { wx, calls }
}

// A's stub `wx`: navigateToMiniProgram is recorded; the confirm request goes
// to "A's backend", which verifies the signed result with the kit.
function stubWxA() {
  const calls = { navigate: null }
  const wx = {
    navigateToMiniProgram: (options) => { calls.navigate = options; options.success({}) },
    request: ({ data, success }) => {
      const result = backend.verifyResult(KEY, data.result)
      success({ statusCode: 200, data: { verified: !!result && result.status === 'PAID' } })
    },
  }
  return { wx, calls }
}

async function waitForEvent(orderId) {
  for (let i = 0; i < 300; i++) {
    const found = events.find((e) => e.event && e.event.order.orderId === orderId)
    if (found) return found
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error('no webhook for ' + orderId + ': ' + JSON.stringify(events))
}

async function main() {
  await new Promise((resolve) => server.listen(Number(HOOK_PORT), '127.0.0.1', resolve))
  const a = backend.client({ base: BASE, platform: PLATFORM, key: KEY })
  const flowFor = (wx) => createPayFlow({ wx, apiBase: BASE, pollMs: 100 })

  // 1. A's backend creates an order; A opens B; B pays; A confirms.
  const order = await a.createOrder({ orderId: 'KIT-1', amount: 1990, description: 'VIP month' })
  assert.equal(order.status, 'CREATED')
  const aSide = stubWxA()
  await aMini.goPay(aSide.wx, { outTradeNo: order.outTradeNo })
  assert.equal(aSide.calls.navigate.appId, B_APPID)
  assert.deepEqual(aSide.calls.navigate.extraData, { outTradeNo: order.outTradeNo })
  const paid = stubWx('pay')
  const back = await flowFor(paid.wx).pay(aSide.calls.navigate.extraData)
  assert.equal(back.status, 'PAID', JSON.stringify(back))
  assert.equal(backend.verifyResult(KEY, back.result).orderId, 'KIT-1')
  const outcome = await aMini.onReturn(aSide.wx, { referrerInfo: { appId: B_APPID, extraData: back } },
    { confirmUrl: 'https://a.example.com/confirm' })
  assert.deepEqual(outcome, { outTradeNo: order.outTradeNo, status: 'PAID', confirmed: true })
  const hook = await waitForEvent('KIT-1')
  assert.ok(hook.verified)
  assert.equal(hook.event.type, 'order.paid')
  assert.equal(hook.event.order.amount, 1990)
  assert.equal((await a.getOrder(order.outTradeNo)).status, 'PAID')
  console.log('OK platform order: created, paid in B, confirmed in A, webhook verified')

  // 2. An order token, no server call first.
  const token = backend.signToken(KEY, { platform: PLATFORM, orderId: 'KIT-2', amount: 990, description: 'Ticket',
    expiresAt: Math.floor(Date.now() / 1000) + 600 })
  const tokenBack = await flowFor(stubWx('pay').wx).pay({ token })
  assert.equal(tokenBack.status, 'PAID', JSON.stringify(tokenBack))
  assert.ok((await waitForEvent('KIT-2')).verified)
  console.log('OK order token: paid, webhook verified')

  // 3. The user cancels: back to A, nothing confirmed.
  const cancelled = await a.createOrder({ orderId: 'KIT-3', amount: 100, description: 'Cancelled' })
  const cancelBack = await flowFor(stubWx('cancel').wx).pay({ outTradeNo: cancelled.outTradeNo })
  assert.equal(cancelBack.status, 'CANCELLED')
  const cancelOutcome = await aMini.onReturn(stubWxA().wx, { referrerInfo: { appId: B_APPID, extraData: cancelBack } },
    { confirmUrl: 'x' })
  assert.equal(cancelOutcome.status, 'CANCELLED')
  assert.equal(cancelOutcome.confirmed, false)
  console.log('OK cancel returns to A')

  // 4. Failures return to A too: the payment fails, or B cannot place the order.
  const failed = await a.createOrder({ orderId: 'KIT-4', amount: 100, description: 'Failed' })
  assert.equal((await flowFor(stubWx('fail').wx).pay({ outTradeNo: failed.outTradeNo })).status, 'FAILED')
  const tampered = token.slice(0, -4) + '0000'
  const bad = await flowFor(stubWx('pay').wx).pay({ token: tampered })
  assert.equal(bad.status, 'FAILED')
  assert.match(bad.message, /signature/)
  console.log('OK failures return to A with a reason')

  // 5. Closing an unpaid order; the change feed.
  assert.equal((await a.closeOrder(failed.outTradeNo)).status, 'CLOSED')
  const feed = await a.changes(0, 200)
  assert.ok(feed.items.some((o) => o.orderId === 'KIT-4' && o.status === 'CLOSED'))
  console.log('OK close and change feed')

  // Not from B, or a forged result: A confirms nothing.
  assert.equal(await aMini.onReturn(stubWxA().wx, { referrerInfo: { appId: 'wx0000000000000000' } }, {}), null)
  assert.equal(backend.verifyResult(KEY, back.result.slice(0, -2) + '00'), null)
  // A result that does not say paid is refused unless asked for; so is a stale one.
  const crypto = require('crypto')
  const reseal = (claims) => {
    const payload = 'pbr1.' + Buffer.from(JSON.stringify(claims)).toString('base64url')
    return payload + '.' + crypto.createHmac('sha256', KEY).update(payload).digest('hex')
  }
  const claims = backend.verifyResult(KEY, back.result)
  for (const status of ['PREPAID', 'CLOSED', 'CREATED']) {
    const unpaid = reseal({ ...claims, status })
    assert.equal(backend.verifyResult(KEY, unpaid), null, status)
    assert.equal(backend.verifyResult(KEY, unpaid, { allowUnpaid: true }).status, status)
  }
  assert.equal(backend.verifyResult(KEY, reseal({ ...claims, status: 'REFUNDED' })).status, 'REFUNDED')
  assert.equal(backend.verifyResult(KEY, back.result, { maxAgeSeconds: 60, nowSeconds: claims.at + 61 }), null)
  assert.equal(backend.verifyResult(KEY, back.result, { maxAgeSeconds: 60, nowSeconds: claims.at + 60 }).orderId, 'KIT-1')
  assert.ok(events.every((e) => e.verified), 'every webhook verified')
  console.log('OK forged results refused')
  server.close()
}

main().catch((e) => { console.error(e); process.exit(1) })
