// Mini-program B: the pay page's logic (PayBridge integration kit).
//
// Mini-program A opens B with wx.navigateToMiniProgram and extraData
// { outTradeNo } (a platform order) or { token } (an order token). B reads it
// from App.onShow / wx.getEnterOptionsSync().referrerInfo.extraData, then:
// wx.login -> /pay/openid -> /pay/unifiedOrder -> wx.requestPayment ->
// /pay/orders/{no} -> wx.navigateBackMiniProgram with the result for A.
// Success, cancel and failure all return to A.
//
// Use it from the pay page:
//   const { createPayFlow } = require('./b-pay.js')
//   const flow = createPayFlow({ wx, apiBase: '__PAYBRIDGE_API__' })
//   Page({ onLoad() { flow.pay(wx.getEnterOptionsSync().referrerInfo.extraData || {}) } })

function createPayFlow({ wx, apiBase, pollMs = 500, polls = 20 }) {
  function request(method, path, data) {
    return new Promise((resolve, reject) => {
      wx.request({
        url: apiBase + path,
        method,
        data,
        header: { 'content-type': 'application/json' },
        success: (res) => resolve(res),
        fail: (err) => reject(new Error(err.errMsg || 'network error')),
      })
    })
  }

  function call(fn, options) {
    return new Promise((resolve, reject) => fn.call(wx, { ...options, success: resolve, fail: reject }))
  }

  function back(extraData) {
    // Returns to A, which reads this in App.onShow: referrerInfo.extraData.
    return call(wx.navigateBackMiniProgram, { extraData }).then(() => extraData)
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms))
  }

  async function pay(extraData) {
    let outTradeNo = extraData.outTradeNo || null
    try {
      if (!extraData.outTradeNo && !extraData.token) {
        throw new Error('extraData must carry outTradeNo or token from mini-program A')
      }
      const login = await call(wx.login, {})
      const openid = await request('GET', '/pay/openid?code=' + encodeURIComponent(login.code))
      if (openid.statusCode !== 200) throw new Error(openid.data.error.message)

      const order = { openid: openid.data.openid }
      if (extraData.token) order.token = extraData.token
      else order.outTradeNo = extraData.outTradeNo
      const placed = await request('POST', '/pay/unifiedOrder', order)
      if (placed.statusCode !== 200) throw new Error(placed.data.error.message)
      const p = placed.data
      outTradeNo = p.outTradeNo

      try {
        await call(wx.requestPayment, {
          timeStamp: p.timeStamp, nonceStr: p.nonceStr, package: p.package, signType: p.signType, paySign: p.paySign,
        })
      } catch (err) {
        const cancelled = /cancel/.test(err.errMsg || '')
        return back({ outTradeNo, status: cancelled ? 'CANCELLED' : 'FAILED', message: err.errMsg || '' })
      }

      // WeChat's notify may be a moment behind the payment: ask until PayBridge knows.
      let view = null
      for (let i = 0; i < polls; i++) {
        const read = await request('GET', '/pay/orders/' + outTradeNo + '?token=' + p.orderToken)
        view = read.data
        if (view.status === 'PAID') break
        await sleep(pollMs)
      }
      // `result` is signed with A's platform key: A's backend verifies it.
      return back({ outTradeNo, status: view && view.status === 'PAID' ? 'PAID' : 'PENDING', result: view && view.result })
    } catch (err) {
      return back({ outTradeNo, status: 'FAILED', message: err.message || String(err) })
    }
  }

  return { pay }
}

module.exports = { createPayFlow }
