#!/usr/bin/env bash
# Platform A's backend with curl and openssl (PayBridge integration kit):
# create an order, then read it. Usage: PAYBRIDGE_KEY=... bash a-backend.sh
set -euo pipefail
BASE='__PAYBRIDGE_API__'
PLATFORM='__PLATFORM_ID__'
KEY="${PAYBRIDGE_KEY:?set PAYBRIDGE_KEY to the platform key}"

# signed METHOD PATH [BODY]: one signed request.
signed() {
    local method=$1 path=$2 body=${3:-}
    local ts nonce hash sig
    ts=$(date +%s)
    nonce=$(openssl rand -hex 16)
    hash=$(printf '%s' "$body" | openssl dgst -sha256 | sed 's/^.*= //')
    sig=$(printf '%s\n%s\n%s\n%s\n%s\n' "$method" "$path" "$ts" "$nonce" "$hash" \
        | openssl dgst -sha256 -hmac "$KEY" | sed 's/^.*= //')
    curl -sS -X "$method" "$BASE$path" \
        -H 'content-type: application/json' \
        -H "PayBridge-Platform: $PLATFORM" -H "PayBridge-Timestamp: $ts" \
        -H "PayBridge-Nonce: $nonce" -H "PayBridge-Signature: $sig" \
        ${body:+--data-binary "$body"}
}

order_id="A-$(date +%Y%m%d%H%M%S)"
signed POST /platform/v1/orders "{\"orderId\":\"$order_id\",\"amount\":1990,\"description\":\"VIP month\"}"
echo
signed GET "/platform/v1/orders?orderId=$order_id"
echo
