// Mini-program A: send the user to B to pay, and read the result when the
// user comes back (PayBridge integration kit).
//
//   const kit = require('./a-miniprogram.js')
//   // 1. Pay: with the order your backend created (outTradeNo) or a token it signed.
//   kit.goPay(wx, { outTradeNo: 'PB2026...' })
//   // 2. Come back: in app.js
//   App({ onShow(options) { kit.onReturn(wx, options, { confirmUrl: 'https://a.example.com/paybridge/confirm' })
//     .then((outcome) => { /* show outcome.status */ }) } })
//
// The half-screen variant: wx.openEmbeddedMiniProgram takes the same
// appId, path and extraData (and returns the same way), where the user's
// WeChat supports it; fall back to navigateToMiniProgram otherwise.

const B_APPID = '__B_APPID__'
const B_PAY_PATH = 'pages/pay/pay'

function goPay(wx, order) {
  const extraData = order.token ? { token: order.token } : { outTradeNo: order.outTradeNo }
  return new Promise((resolve, reject) => {
    const open = typeof wx.openEmbeddedMiniProgram === 'function' && order.embedded
      ? wx.openEmbeddedMiniProgram
      : wx.navigateToMiniProgram
    open.call(wx, {
      appId: B_APPID,
      path: B_PAY_PATH,
      extraData,
      // 'release' for the published B; 'trial' or 'develop' while testing.
      envVersion: order.envVersion || 'release',
      success: resolve,
      fail: reject,
    })
  })
}

// Called from App.onShow. Only a return from B counts; the outcome B reports
// is shown at once, and confirmed by A's backend, which verifies `result`
// (and learns the truth from PayBridge's webhook anyway).
function onReturn(wx, options, { confirmUrl }) {
  const referrer = (options && options.referrerInfo) || {}
  if (referrer.appId !== B_APPID || !referrer.extraData) return Promise.resolve(null)
  const back = referrer.extraData
  if (back.status !== 'PAID' || !back.result) {
    return Promise.resolve({ outTradeNo: back.outTradeNo, status: back.status, confirmed: false, message: back.message })
  }
  return new Promise((resolve) => {
    wx.request({
      url: confirmUrl,
      method: 'POST',
      data: { result: back.result },
      success: (res) => resolve({
        outTradeNo: back.outTradeNo,
        status: res.statusCode === 200 && res.data.verified ? 'PAID' : 'UNCONFIRMED',
        confirmed: res.statusCode === 200 && !!res.data.verified,
      }),
      fail: () => resolve({ outTradeNo: back.outTradeNo, status: 'UNCONFIRMED', confirmed: false }),
    })
  })
}

module.exports = { goPay, onReturn, B_APPID }
