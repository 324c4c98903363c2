//! Every vector of the v3 reference (`WECHATPAY-V3.md` §9): the official
//! test key K1 signs requests, `paySign` and (playing WeChat) replies;
//! AES-GCM vectors from wechatpay-java and computed ones.

use base64::Engine;

use super::crypto::*;
use crate::secret::Secret;

const K1: &str = r#"-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCm2mb6q8gMKH/3
CNTbpJAIrbqiBiQGEOtjGcBrDYltsGynWgNscqT7WvfzU14FQbYcQUC5T4Wvva7m
i3fIp3OgX8VqMDNA0qebnr38Pe6kqiLyZgFpJPXlSKDyPyqhRbVTbXssvSMQeVKc
dXeVxoNNeoOlNFHgF/P0io6AmAVnz+hN8SiZKuOsth5/zUTLGvtkgxBcQooQrtXh
RcpLT798OyIb9xeJ2HO3xRtMv2+perEzb4gMibI74UBz+2QEbnkubPE+2jU2rRZu
dnNEz/BPOt3Qj/w2V6/G0VumGDh6+UeMU0jv4aupHztWITC4Akn0l7lBCNy3lgl8
VFaJnkIxAgMBAAECggEAYGL8aESB7NwciDWW2UdoWUsa7GxFtSdjAz2mFXGdeTsY
mVh7b9OOkRGM+Qio4LqEHDBp1mMk5E/cUJwy1zw8pGGO5nfvs7u9TT3XnHaefIs4
YvUgTYAneIuLRkXNN5rQU+CD7mVYczTSz0Vgjqo9wa1LjUz7G0xbBmJgTdMEFGJs
eJjy6AbJo0CGIwp6HJbTm4CmOUgXnnDAIbEGTIRImkZFH/rzneIeR7oZ77FVwxr1
CZB2gfRCov/yRPbw8vnryYkmvQ7D/ze3j5097vRg/MoDGBSdoOwcmo75vyofr0AS
zytMjmHYyifqkf5slPropSiJeGf4p/7gtKyF6dE/XQKBgQDVAlJ+4U5ZVGOuDc3+
sAhz8CTzgFNlq9vKuSoFK6hOz2L+cwj+E7NXGkOe2DsHHZNy2Xqxk7caKhPEp1z9
hhpMpyLVMoFt6CKemyoRBWDCQwLLwem9SZF/IAyovBkLiH36P42Jm26gUkNMKC/5
Zhtqxf6RZgRQzbVudJi47vIRCwKBgQDIh0+v27Oo+DM3fhObH4I1NrXpWOEGH7OQ
G1dEsMuFYF4hjGhg0kBEP3w9vVdl2+mRllZKTsx9oqjb8OibPLLIH8xsdbAB0WLf
JvjLu4wl/ILUzN1RI03dWnnv2EnEeQn6c3hizvrJ9wR5U4ue9RPVnQooJ0hZF1PU
uCL5fWK3MwKBgElReU/PAYbh80WP3t3Rfbdaa32dKBeQ5iCLR5lsA4zM+YgX1HqQ
EWTj126vgvHaDkyz6vWAoL/Sx+cirHFfXWIRDX5Q2hgYlQH+6qXdMgbrxeSYpHnQ
/tHBGFpkFELSAnrGsVMyOwvYBO4LzyeLK9i+ufcWJFoj1FVmsMLHDG8tAoGARdbi
iQQCoYG4DMarO2aQ6cmhN6EN1h0qY7EyBqlwaIZ0okiNfdMcMOjPc41DKCWcRmlO
qlihXcxN9TQFPzO3rH1urAOdBjUPs1qWYhZyrDQyuLyVBBJApyxAtajloDjrob+f
mQIvVDHk7ACN6xG+E7K6+9salnTKbJapD618uQMCgYBNy6XUvzLkP/A1U/UZdtcx
l8GwU/dturLxz4CyGbqDw4ubaYY2e13lnqHUqQgPtiSyH51nq3tdo8G0YAJdfkSv
KvnfslW91fyEBUKnkdW1o3/1UFU/wprZ7ixVL/F42A4xDu7OFE8EnweJOZ0jWceE
OdhCkaIGBCfRnlECRK8UyQ==
-----END PRIVATE KEY-----"#;

const K2: &str = r#"-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAptpm+qvIDCh/9wjU26SQ
CK26ogYkBhDrYxnAaw2JbbBsp1oDbHKk+1r381NeBUG2HEFAuU+Fr72u5ot3yKdz
oF/FajAzQNKnm569/D3upKoi8mYBaST15Uig8j8qoUW1U217LL0jEHlSnHV3lcaD
TXqDpTRR4Bfz9IqOgJgFZ8/oTfEomSrjrLYef81Eyxr7ZIMQXEKKEK7V4UXKS0+/
fDsiG/cXidhzt8UbTL9vqXqxM2+IDImyO+FAc/tkBG55LmzxPto1Nq0WbnZzRM/w
Tzrd0I/8NlevxtFbphg4evlHjFNI7+GrqR87ViEwuAJJ9Je5QQjct5YJfFRWiZ5C
MQIDAQAB
-----END PUBLIC KEY-----"#;

/// The WeChat Pay public key of the official verification guide.
const K3: &str = r#"-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwXNI6sdlknHBnK8Fu2U6
Cwor9qY747jP8KAfeBMeveEt1TqaHkLfaSD07trZLhGpfs8/AHqjhgSMO1O10YQW
OrrJ4hjIWPKqxbgrYMkBQc+mwdiWp4W3ByCqxBRagCveCXRWCmuJYovl9H/bsDI0
iGbpVtEOghJtfciisYSgxcLufUDTRkvwxjIBK1pCRjk33jJ5YTBWTHMRtMAOcFLN
F6hdEYdX8SPsgHHeLZ5Lv2T/686w1xtgCHef/sd4uSfWmyzsalQdHG/e4IyYmrhx
+O3VBoNDzE3nx23bFeV/RVNCG7cV6VhmYokJNHa/erIPkEmEFID6A5wQOXuxUkmJ
WwIDAQAB
-----END PUBLIC KEY-----"#;

const V1_SIGNATURE: &str = "mI35pfNEQV6777ke/1T+LJLQDNTm7yeoUJH+j/adPGhmCCi0PbgkvYQTRcXH0uibcLVtvFLdGLpmoYO9FV6lBBsTAjuhh5YOvQi0e2g3e0yytitiNET9FEuqM0pjnKfRW4K6LIZDdbWJv9KhZUx3DrJa5TL7OJ7VdADVivxVySIlPVKjGwuCXzuXSJes0UcILgWQUMyha5/3nYofuHtS7r+KYyMuxD+oJ9VM1Qdxk4UIG59CP5Y3wtYIFybyF3bdu1caHTRRX+DLyMXyYA/IrTmiW01c4RPjpHBX5Dk1sZyY1zVsWNsvMHr2e1NTWtBxKJ+qk5N61J7caYoepHFaxw==";
const V3_SIGNATURE: &str = "jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A==";
const V8_SIGNATURE: &str = "YBWObRDrgA+1EUZ/jclwQoqmFBJ7ixg8LE1co2pZgXPIEk2ZWKPIFrKvIjEaiuotcjCuw9DFJNcmoMVSCg4cg1EsoKWWTAaJh4pi88SYtvgUDZwfIE3gxfFs/hY+KZHLgUQz6Yc0h6SJLbUEKf36darv6CctuLlUhpMJ6vVQa73rTJdvEdbnYJHAqnAB1ZAnCoVWKbPcdKlAgrdT12sFwszLPbgIvUL7oxgSi8+7Uln63Ir4Y/blLj+HnL0NdbKCp0LtdrxbPX+yS91GDHoFWoCxI98PFWLyBFpNYuKr2C4rinkvXZ1XYAJaPQGQg7DyDvl6u+Rj1ikbaUOPCwJOew==";
const V9_SIGNATURE: &str = "lWpTuYy/Y1ZssEWXlPwgr8mBPLqZqb4x+DG8LGde/FVAmYWvz7qbe84zOJz1ILnwmv4KVHO+80NiU81X7MSA4YqO93/Sue+EY0AfJ2ubnc0Z+bUzMNdNiF7q9Tl4TdC+0h2p3WQ5/c8fao4zJRbIbJvUry9yNYh0EPdcD0GT1fBQIybV4+JNB83QJGCy8VL55NCTXNlKOdYHqKz9znPT+yeq3tudA/LF0UN++IZHUe8VwqXnRM5I+7+yvVSmEbe8ZJCUnPLO8T8qj+MOqpM42pQPDKmzy48FdEoDe7pW7ZT8zfMpLap1moMy9hXKjheMEYilxRrr5HkMELbO9YYosA==";
const NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";
const BODY3: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900007291","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;

fn k1() -> MerchantKey {
    MerchantKey::from_pem(&Secret::new(K1)).unwrap()
}

#[test]
fn request_signatures_v3_to_v6() {
    let cases: [(&str, &str, &[u8], &str); 4] = [
        (
            "POST",
            "/v3/pay/transactions/jsapi",
            BODY3.as_bytes(),
            r#"jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A=="#,
        ),
        (
            "GET",
            "/v3/refund/domestic/refunds/123123123123",
            b"",
            r#"Lc9VXxmeonkdV8Xk9tmigQFLhl0vRWTerdmoRu01aAnYwIrD/5nsSwE1WlmZGLRlAFTNQ3QsMa0+VRDlJp1Wp5p0nO8EK68b5sJBbjouxaFciIfq1zfDWWz+jqhcMoKXI1A6dPm1AW7D4d30WsMTNzp6g23OXakIsh9LO3lUmwvTuE0BY8ncf6tNGk4wKmvXwERd/ZpoQY3MAVKz+Nakwc+2XBmzT66KcUehU5kr4IvGa/lEU5RZb/q00zP9VLdBhC/jQSX3X1UcJLCtEc4gTmib4tnmAT+bHF/e17ZAuxDNcx6rqT8gNEXqaJGG+1OflMSTU2tpyG65G4dMKdFcoA=="#,
        ),
        (
            "GET",
            "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1900007291",
            b"",
            r#"cVvdVujlEmASmAYpcmKXmIrlQualKxd87f8XZtnTeLCw3V7kZ1ST6YwX0kSLsqJeecZqmKJfd6ieRl/hRLZUodxXU1NzoTz1OXNh6TzBfcxU8xRNFbmPiEHwMJM7Jo52TYGk71MaCbvkPlUpUL6WhpmAgfC7jg/3IcA/UILbby4Nro0Nbq0An/DYEEp8vZMaags/5ed52JpGqxEOcTLIuqihy+Amy5z+t8m3a93YTRNDRi0W5b332UQBtrWRSwJOMU96Nof7hJC2MM71Y1bHB8YP8kBKaoDW7vEoNsEMVzkyp0pyjUHFWc6yaRVHE054z79S2koj3jSRbCiY+CaJzg=="#,
        ),
        (
            "POST",
            "/v3/pay/transactions/out-trade-no/1217752501201407033233368018/close",
            br#"{"mchid":"1900007291"}"#,
            r#"P07HGWiMaJOltVF73HduLS9BRHZgDNu9vz6W34MvVxtX6wF7x4DukPqSYsKm1rcJ0ZGbdNZnYy4uFR/ghWB2Jr+m4wHI61IkZMKLZSO6mTycv9hrr/GSGhNgCqme+yGjonosG6p5RN9dgn2O/1SL7k3uP6639dWs2mGwBDSd/TfGI1250II3UFxdH1wUTUyJx0nIaJKnsS8JcFkv/yL1HJlM7bg+xoMLQU500RB4DPn6hG3luz4XDobPc49gT6jBxNCviFaPEanGXhW3NKe3dKBvDAsAcSTbEwI1kF2BOx8B0QTtS7FKRZ246KHDjsy5t4GWXztLdAZWIVVVVZDZEQ=="#,
        ),
    ];
    for (method, path, body, expected) in cases {
        let message = request_message(method, path, 1_554_208_460, NONCE, body);
        assert_eq!(k1().sign(&message), expected, "{method} {path}");
        assert!(PublicKey::from_pem(K2).unwrap().verify(&message, expected));
    }
    let header = authorization(
        "1900007291",
        "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
        1_554_208_460,
        NONCE,
        r#"jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A=="#,
    );
    assert_eq!(
        header,
        concat!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1900007291\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",",
            "signature=\"jnks4dlrPw3ZX+ozVvSK39oa0t7OMBsg83BHAwd8BRdUFiVaQNTLTvci+wURgP1OQBbKYhFGvt7iqYpDSTQkp7Uq1sltaQKyncCyrA1g88m5bsKERQfPyT0ahSwKTYJ1CAn9QiJuSJRq1QsQs07eehbU/k9BCS51jTyc1Jpsi2H77HF9f/BnjXAOP3/sPObg6V5Ee4EzwLox684hhuMuIwHo7D8KFk3LIHOKDcNI4It1aCXydFWNpNK+SG86VUDe5kwoDpw4Ulqfu9z8OFDGbDs9TCxEv8iqQzbpxOlEVoOe2kalSYM5kApQb3nZcxdUtoE0liJGW3RGUNE0t4v01A==\",",
            "timestamp=\"1554208460\",serial_no=\"408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB\""
        )
    );
}

#[test]
fn pay_sign_v1_and_app_sign_v2() {
    let package = "prepay_id=wx201410272009395522657a690389285100";
    let message = pay_sign_message("wx2421b1c4370ec43b", "1554208460", NONCE, package);
    assert_eq!(
        k1().sign(message.as_bytes()),
        r#"mI35pfNEQV6777ke/1T+LJLQDNTm7yeoUJH+j/adPGhmCCi0PbgkvYQTRcXH0uibcLVtvFLdGLpmoYO9FV6lBBsTAjuhh5YOvQi0e2g3e0yytitiNET9FEuqM0pjnKfRW4K6LIZDdbWJv9KhZUx3DrJa5TL7OJ7VdADVivxVySIlPVKjGwuCXzuXSJes0UcILgWQUMyha5/3nYofuHtS7r+KYyMuxD+oJ9VM1Qdxk4UIG59CP5Y3wtYIFybyF3bdu1caHTRRX+DLyMXyYA/IrTmiW01c4RPjpHBX5Dk1sZyY1zVsWNsvMHr2e1NTWtBxKJ+qk5N61J7caYoepHFaxw=="#
    );
    // The APP form signs the bare prepay id: a different signature.
    let bare = pay_sign_message("wx2421b1c4370ec43b", "1554208460", NONCE, "wx201410272009395522657a690389285100");
    assert_eq!(
        k1().sign(bare.as_bytes()),
        r#"gXx9KhTP6IooKV1SuG3OCGlBIgZbKtubCZvnau6khw1iffvNT28IzLbKmztq2xA/RCNbZa1XOsoiuVmAEeTZQicWfhv4P+O4oBRIrx0X9f3cnWFkMBU9alTWs0nyQ1N9fcILOTe0f4kxOhVh+/Xhn5hOiUK7Sz3XA1mcpa3R2NCWf/e+0ow/RDf15iTymOHgDrEkT/gedg/3E0iXfDX3mFicSZhrHESZDOTXcl9RzELREBUFznd/o2NQM99WcL86m23HY0cTy+QGWU4QDmNrbQ9ihmLW71qPb0Cx/d7EQvw/Kyx0A6s64ZQp3hHdcmiRcLnjVXrKCk7LShaCK+lS3Q=="#
    );
}

#[test]
fn response_verification_v7_to_v9() {
    let k3 = PublicKey::from_pem(K3).unwrap();
    let body = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}"#;
    let v7 = r#"mfI1CPqvBrgcXfgXMFjdNIhBf27ACE2YyeWsWV9ZI7T7RU0vHvbQpu9Z32ogzc+k8ZC5n3kz7h70eWKjgqNdKQF0eRp8mVKlmfzMLBVHbssB9jEZEDXThOX1XFqX7s7ymia1hoHQxQagPGzkdWxtlZPZ4ZPvr1RiqkgAu6Is8MZgXXrRoBKqjmSdrP1N7uxzJ/cjfSiis9FiLjuADoqmQ1P7p2N876YPAol7Rn0+GswwAwxldbdLrmVSjfytfSBJFqTMHn4itojgxSWWN1byuckQt8hSTEv/Lg97QoeGniYP17T80pJeQyL3b+295FPHSO2AtvCgyIbKMZ0BALilAA=="#;
    assert!(k3.verify(&response_message("1722850421", "d824f2e086d3c1df967785d13fcd22ef", body), v7));
    // Negative checks: another timestamp, no final newline, the body re-serialized.
    assert!(!k3.verify(&response_message("1722850422", "d824f2e086d3c1df967785d13fcd22ef", body), v7));
    let mut cut = response_message("1722850421", "d824f2e086d3c1df967785d13fcd22ef", body);
    cut.pop();
    assert!(!k3.verify(&cut, v7));
    let spaced = br#"{"code_url": "weixin://wxpay/bizpayurl?pr=JyC91EIz1"}"#;
    assert!(!k3.verify(&response_message("1722850421", "d824f2e086d3c1df967785d13fcd22ef", spaced), v7));

    // K1 playing WeChat: a JSAPI reply and an empty 204.
    let reply = br#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
    let v8 = response_message("1554208461", "e2a1d9c0b7f64e3a8d5c4b3a29180716", reply);
    assert_eq!(
        k1().sign(&v8),
        r#"YBWObRDrgA+1EUZ/jclwQoqmFBJ7ixg8LE1co2pZgXPIEk2ZWKPIFrKvIjEaiuotcjCuw9DFJNcmoMVSCg4cg1EsoKWWTAaJh4pi88SYtvgUDZwfIE3gxfFs/hY+KZHLgUQz6Yc0h6SJLbUEKf36darv6CctuLlUhpMJ6vVQa73rTJdvEdbnYJHAqnAB1ZAnCoVWKbPcdKlAgrdT12sFwszLPbgIvUL7oxgSi8+7Uln63Ir4Y/blLj+HnL0NdbKCp0LtdrxbPX+yS91GDHoFWoCxI98PFWLyBFpNYuKr2C4rinkvXZ1XYAJaPQGQg7DyDvl6u+Rj1ikbaUOPCwJOew=="#
    );
    let v9 = response_message("1554208462", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", b"");
    assert_eq!(v9, b"1554208462\n0f1e2d3c4b5a69788796a5b4c3d2e1f0\n\n");
    assert_eq!(
        k1().sign(&v9),
        r#"lWpTuYy/Y1ZssEWXlPwgr8mBPLqZqb4x+DG8LGde/FVAmYWvz7qbe84zOJz1ILnwmv4KVHO+80NiU81X7MSA4YqO93/Sue+EY0AfJ2ubnc0Z+bUzMNdNiF7q9Tl4TdC+0h2p3WQ5/c8fao4zJRbIbJvUry9yNYh0EPdcD0GT1fBQIybV4+JNB83QJGCy8VL55NCTXNlKOdYHqKz9znPT+yeq3tudA/LF0UN++IZHUe8VwqXnRM5I+7+yvVSmEbe8ZJCUnPLO8T8qj+MOqpM42pQPDKmzy48FdEoDe7pW7ZT8zfMpLap1moMy9hXKjheMEYilxRrr5HkMELbO9YYosA=="#
    );
    let k2 = PublicKey::from_pem(K2).unwrap();
    assert!(k2.verify(&v9, r#"lWpTuYy/Y1ZssEWXlPwgr8mBPLqZqb4x+DG8LGde/FVAmYWvz7qbe84zOJz1ILnwmv4KVHO+80NiU81X7MSA4YqO93/Sue+EY0AfJ2ubnc0Z+bUzMNdNiF7q9Tl4TdC+0h2p3WQ5/c8fao4zJRbIbJvUry9yNYh0EPdcD0GT1fBQIybV4+JNB83QJGCy8VL55NCTXNlKOdYHqKz9znPT+yeq3tudA/LF0UN++IZHUe8VwqXnRM5I+7+yvVSmEbe8ZJCUnPLO8T8qj+MOqpM42pQPDKmzy48FdEoDe7pW7ZT8zfMpLap1moMy9hXKjheMEYilxRrr5HkMELbO9YYosA=="#));
    assert_eq!(k1().public_key(), k2, "the public half of K1 is K2");
    // A probe signature is never valid.
    assert!(!k2.verify(&v9, "WECHATPAY/SIGNTEST/aGVsbG8="));
}

#[test]
fn aes_gcm_v10() {
    let key = ApiV3Key::new(&Secret::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb")).unwrap();
    let ct = "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=";
    assert_eq!(key.decrypt("uluk4a9R25RW", "associatedData", ct).unwrap(), b"message");
    assert_eq!(key.encrypt("uluk4a9R25RW", "associatedData", b"message").unwrap(), ct);
    assert_eq!(key.decrypt("uluk4a9R25RW", "bad-associatedData", ct), Err(DecryptError::Authentication));
    assert_eq!(key.decrypt("bad-4a9R25RW", "associatedData", ct), Err(DecryptError::Authentication));
    assert!(matches!(key.decrypt("short", "associatedData", ct), Err(DecryptError::Malformed(_))));
    assert!(matches!(key.decrypt("uluk4a9R25RW", "associatedData", "not base64!"), Err(DecryptError::Malformed(_))));
    assert_eq!(ApiV3Key::new(&Secret::new("31-characters-is-one-too-short!")).err(), Some(KeyError::ApiV3KeyLength));
}

#[test]
fn platform_certificate_v11() {
    let key = ApiV3Key::new(&Secret::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb")).unwrap();
    let pem = key.decrypt("14b16c03dc1b", "certificate", r#"Mr/AxbvY+WL9hKlD5nIa03LOMPpn5f+CWeNxE4ujl0f5gXZ9XLJ9CldkArCOTsbU62XgKnTc3YvRMZQ7wCmE2fzwmAenAySTYsPms72JhggPWfdqVxri9YD5wBYKn8Ck0Fc5JIiVw9WlN2oxHBz83mRVsjoTGC5+cX1CdYqKuZ8pkvi0aCJIq07ZC8MHoTowUz+4jYJy9XeKqip83Z7BmUYxsePpNM+HtihBqTJIUYXJfX7Col5X0ACsApRoU9l6swfW/kzvqNpDJavhDBGasLrr5822+Fk5nVkcTi53f8Wbue7ODWjJxj1yhRYcxFCvXLtpYNB+Qa1aXtrBSdBdBI2p7o+6Imn+auHLBCzkrZqF/yd+d4vTn4tqHPLUj89XcHsMf96uBo3T/HQV8LEDeIO+6YvOK9FrIDYsvp+imN4n/mnF7eJKo9mpN/QqWJiawrFpAmMMxFKBjIdpgMnVUl3Z11RcWKyfOJ3kcmItTWcnZFNyDgR9cS0aU6QPlefa3uUW89uzBuHjcFdDl43yU3LE4qZnHLDcDgx4qt0OFCLiy51GXtEpyYs5k99YJBvKK+RyIs4Yc1/smBmClQUhxW+8bsPNOcXfDvH2yX4YzESoO4TV0RqiCgnsSd4zIFyJPiMKIGzVHiw6Kg0eGCmB4mGHEEZCQ0eN3SSPO0QVjjtBYfgXDZfVHSaAB8PjWBVNFimoViZZQrwT6Ygo0LU0Dd8+F5aHFYr4OPHPslr3hrgutEYXDTv1vTA6ABJGqknJ9Y2vtyWpy7aIwxc0kQq/1ezjs+RMVL/LRpGDnbx1/CGPDjZhYgZypKa55+PDhoaQxqkF3xCLz2DGoNHZYmFqxzAOsAK0vJZw4VcAk6ssbA6YIaMuiemEpxfLC9ZiXtRqsX9s+GWjjtA8JywOFMO+NKZm9BH/E5YNg2DDD3sHG9Mciwn7yJ6sdf8h2lAWlEExAOeiBNyshOHAQ0/S+x1ncWNiqY+Uh5n0rtonvePV2MsxVlEWR3AVHn1abcEWkzivd+G5kg7LYO0goqzGClcQfnFfZdO6KwcMXsBCnm9A1Bl4+k5LLokTIYH5/36SRIZ9j0CHGD77BQLE7x8AlNsoFS2m263tLLq78TFqvZUTIZIQcVIl+NInscS3xQbA38qqFqutCWIwoF1azuJ7woiJyMvnS3xzIpNzP+rzJ8VDXxjLjpEUBOC9WDs74+QMtsAdmh6g0KDclHEk8WJ4P2bnso4z3VCGoDT5X/0bS1C+jMZMKaOCNB21FZ08qgUHmKeDeg8ylENu+mh2Y/AaEDSGkGBHIfFbhMYO3uRxhk9hldiHEnHgdkXiVAAUWk/IhtmGijibO/L76vB74Xpes973uK+2iFKgNBk8qTLLZZnuWbcMQuA6VsFULRb/C+q9B21YuAWPMzvgBwr4EX2m/OpF5w8Q0HL7v1H5H0mIGJbrjnklUPoBYrw30W3uk7yF0KE6sfMukafFx0S9rBOL0RykGDPwC0lHSNySkXDeM5XvDJ+dtHK+RDwhJR+azfrWAHGMtZcQ+YVamjWVmHxXM03j3GeCXgqae1upwHzkPL5OwojcQ5MQi3Kv/1xtwY0cRN/yeZTOsXfujtqhkJj/Vltby4lnW4SCj4LjWQF19BY6zhzF4yybBA8bhhtoNP/zx8QkhHAkIROkK2ZVgfocCAPvfQ+vSrsIBO+L5cmg6mzFn4g84lsHscgXnszIlzUrzx/4Tam0uwuS9J1gddZ0I0QUt9SJzfsoBCTU0OgNMUtXKS5HvgXe7abexMtFH5eulOsAuFZkQ5LYJa/m4yHFInXzL/t3hjdTi2NmxUufvYzwIyffRTu5vS9vjscARD9lUQDHFQ/xgWe1i8EkRlrSfjlXt00+4//h2bcJKyTBT3IXwvKNsuY29V9/vU3HkvWKZ99zpSlmcZRuBa1BHbyPEvc0NlqIIoKidxqUvOR64MzudHhAjgWFP+IXojfhS3Gj9OJhBL7s"#).unwrap();
    assert_eq!(pem.len(), 1475);
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&pem)),
        "8693813ac0735cb54b6e67f25086a5924c103712255b8857049b8e502d564eb4"
    );
    let (serial, _) = PublicKey::from_certificate_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
    assert_eq!(serial, "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC");
}

const V12_KEY: &str = "WeChatPayV3SimulatorKey000000001";
const V12_PLAIN: &str = r#"{"mchid":"1900007291","appid":"wxd678efh567hg6787","out_trade_no":"1217752501201407033233368018","transaction_id":"4200001863202305068344507881","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2023-05-06T15:17:31+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;
const V12_CT: &str = r#"ju93b/apk4R8JSGBN+fnxGs7vzgioYNqO3TGghnsZZFovNCrbBYttTuMSpF0DhbOoRSsYbpRHY26zwXdWowpicvg+VQk9UBMamJEtpAGUsFe4wX8iiXILxJ/CrVQpglpjCEfal3RAlOUgNde5tRP5d+sKLb7vn9vqJeSeBHle63+XydD6NWXxeZ9n2hcoh1iTtN3VHNJ1veeHmCs6aMQotKQXBoY59RNpbZ733U1+gjz/eFnF9UGNqQSiXZ76Gr/QTA8rODsOCvQP+i3vcZGa293cDlrKKiLe4zsuw5epBAqttFWIo4bjxR4Ae4JLdahI95fXP/GiMbPXBjMsvkyoo9OYHGPQ0eQSw7fcCZvuPWeRnvT3gIs+Xr8FNeddHYzq0QS4eNmzdzr7J6dWBmT5Vf+gAzP2wrFvtIh5cOG8Pok6qlHH+6IR2Uii3prBJoJ6Tr23Sv1jEVuni90ZbD9F8pjSoPkHQSfa0oI+IpuF4Zg5eytfUUJv+WdIwPp6VodcHlIG17DrzSobGOX6mAT0cz9AmxA7cD+SSFLXRZkE9t7wXTJCWXcwqbwLx+y+N5fOkwoi6ypJJrEFIFe9FzE"#;

#[test]
fn transaction_and_refund_resources_v12_v14() {
    let key = ApiV3Key::new(&Secret::new(V12_KEY)).unwrap();
    assert_eq!(key.decrypt("a1B2c3D4e5F6", "transaction", V12_CT).unwrap(), V12_PLAIN.as_bytes());
    assert_eq!(key.encrypt("a1B2c3D4e5F6", "transaction", V12_PLAIN.as_bytes()).unwrap(), V12_CT);
    for aad in ["", "Transaction"] {
        assert_eq!(key.decrypt("a1B2c3D4e5F6", aad, V12_CT), Err(DecryptError::Authentication), "{aad:?}");
    }
    let refund = r#"{"mchid":"1900007291","transaction_id":"4200001863202305068344507881","out_trade_no":"1217752501201407033233368018","refund_id":"50300103182023050612345678901","out_refund_no":"RF1217752501201407033233368018","refund_status":"SUCCESS","success_time":"2023-05-06T16:00:05+08:00","user_received_account":"支付用户零钱","amount":{"total":100,"refund":100,"payer_total":100,"payer_refund":100}}"#;
    let refund_ct = r#"CkOK9bW4PYQn445ilV2/B0Vcy/06B8POgY+6sdko+1UpMFd5S1pBx7ZpxnW8/JZZ7yhmrSIhMHaJdeeUvGMN2jE0RJnJwfIoAfAKdjMBBUZ1ncL+/mXnzPaabuTLeW4YWEkTGWrDO2KlmnhZ+rb6BpwjW6w/ErRG3oP/LAGKhAB3l1OSzkiUwdqNn9kJPDTL3J4xRpdRrT/NHR5Ct8sB+0i3k0ka7O9IJ///VFgUgrGjZPNQL86XrBAZ30mfuVLejerENO9qcd3oU3rhu4vwAUXL5HiKmBh5228iOJJ2JLGeVT+NxUehkR9BljdNvBPH/jJ77hfvzNJme1V1wTL3m0BrC3Y3STDxeG43knuepuJ6HG6KVuVg6z/aPsh3z/PZ7K+Lnwo3yhIEv/13bRX7nuPu/S/9FPlHEpk7Vlxy3e/inxZ3sAxNHvWP+iGEqodNxilipxE7Sft7GZ1C10CHE7ot2CHfojjS+VFObpEn+Vi9kQWENIG+h9UrPttdKkpMdGH/H6PqlluU5FypE7HEZm8w1F2Cw909YlvAbg=="#;
    assert_eq!(key.decrypt("r1S2t3U4v5W6", "refund", refund_ct).unwrap(), refund.as_bytes());
}

const V13_BODY: &str = r#"{"id":"EV-2018022511223320873","create_time":"2023-05-06T15:17:32+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"ju93b/apk4R8JSGBN+fnxGs7vzgioYNqO3TGghnsZZFovNCrbBYttTuMSpF0DhbOoRSsYbpRHY26zwXdWowpicvg+VQk9UBMamJEtpAGUsFe4wX8iiXILxJ/CrVQpglpjCEfal3RAlOUgNde5tRP5d+sKLb7vn9vqJeSeBHle63+XydD6NWXxeZ9n2hcoh1iTtN3VHNJ1veeHmCs6aMQotKQXBoY59RNpbZ733U1+gjz/eFnF9UGNqQSiXZ76Gr/QTA8rODsOCvQP+i3vcZGa293cDlrKKiLe4zsuw5epBAqttFWIo4bjxR4Ae4JLdahI95fXP/GiMbPXBjMsvkyoo9OYHGPQ0eQSw7fcCZvuPWeRnvT3gIs+Xr8FNeddHYzq0QS4eNmzdzr7J6dWBmT5Vf+gAzP2wrFvtIh5cOG8Pok6qlHH+6IR2Uii3prBJoJ6Tr23Sv1jEVuni90ZbD9F8pjSoPkHQSfa0oI+IpuF4Zg5eytfUUJv+WdIwPp6VodcHlIG17DrzSobGOX6mAT0cz9AmxA7cD+SSFLXRZkE9t7wXTJCWXcwqbwLx+y+N5fOkwoi6ypJJrEFIFe9FzE","associated_data":"transaction","nonce":"a1B2c3D4e5F6"}}"#;
const V13_SIGNATURE: &str = r#"kax3b2o/RNwZZoLnfg4C4Ml1+6/RQynd8ZAUVbQ6/woi/qG3lYtamrYbCeJpkW3wF3HiKpiD34mS0xBMpEmgkxIhMz4BrYztyAkb53d//rh1Bw0L9QGaaPvLG+rytjRBfX0OLfF5UKWVfbX2KwCDL6jwz6ed5N0XNpRE2jFd3mXnInCl83N9QpNkN0lGet8axWM3dQO4gBfrCXJTH2/DpwmWaKBAlQzyQ4Yh6cgkXk8ED/75x8zop8U2HtbpiIPnlXaKwH7+CvEh7OqIGRJNbod+fzVnqIZGEvlZ6Kr0DoRf5FTidivCaDzG87LFB3KX49sbXlZkNx4hTD7wYr++/w=="#;

#[test]
fn complete_notify_v13() {
    let body = V13_BODY;
    assert_eq!(body.len(), 909);
    let signature = V13_SIGNATURE;
    let message = response_message("1683357452", "fd5Kq2PzW8xR4mTg7LcY1vBn3HsJ6eQa", body.as_bytes());
    let k2 = PublicKey::from_pem(K2).unwrap();
    assert!(k2.verify(&message, signature));
    let respaced = body.replace("\",\"", "\", \"").replace("\":\"", "\": \"");
    let message = response_message("1683357452", "fd5Kq2PzW8xR4mTg7LcY1vBn3HsJ6eQa", respaced.as_bytes());
    assert!(!k2.verify(&message, signature), "a re-serialized body does not verify");
}

/// V13 as the notify handler will take it: the headers, the window, the
/// serial, the probe, one changed byte anywhere; then the resource.
#[test]
fn notify_v13_verified_then_opened() {
    use crate::wechat::v3::notify;
    use crate::wechat::v3::verify::{SignedHeaders, Verifier, VerifyError};
    let body = V13_BODY.as_bytes();
    let serial = "PUB_KEY_ID_00000000000000000000000000000000";
    let mut verifier = Verifier::default();
    verifier.add(serial, PublicKey::from_pem(K2).unwrap());
    let headers = SignedHeaders {
        timestamp: Some("1683357452"),
        nonce: Some("fd5Kq2PzW8xR4mTg7LcY1vBn3HsJ6eQa"),
        signature: Some(V13_SIGNATURE),
        serial: Some(serial),
    };
    let now = 1_683_357_452;
    assert_eq!(verifier.verify(&headers, body, now), Ok(()));
    assert_eq!(verifier.verify(&headers, body, now + 300), Ok(()), "within the window");
    assert_eq!(verifier.verify(&headers, body, now + 301), Err(VerifyError::Stale(-301)));
    let other = SignedHeaders { serial: Some("PUB_KEY_ID_99"), ..headers };
    assert_eq!(verifier.verify(&other, body, now), Err(VerifyError::UnknownSerial("PUB_KEY_ID_99".into())));
    let probe = SignedHeaders { signature: Some("WECHATPAY/SIGNTEST/aGVsbG8="), ..headers };
    assert_eq!(verifier.verify(&probe, body, now), Err(VerifyError::Probe));
    let unsigned = SignedHeaders { signature: None, ..headers };
    assert_eq!(verifier.verify(&unsigned, body, now), Err(VerifyError::Missing("Wechatpay-Signature")));
    for at in [0, 100, 500, body.len() - 1] {
        let mut changed = body.to_vec();
        changed[at] ^= 1;
        assert_eq!(
            verifier.verify(&headers, &changed, now),
            Err(VerifyError::BadSignature(serial.into())),
            "byte {at}"
        );
    }

    let key = ApiV3Key::new(&Secret::new(V12_KEY)).unwrap();
    let envelope = notify::envelope(body).unwrap();
    assert_eq!((envelope.id.as_str(), envelope.event_type.as_str()), ("EV-2018022511223320873", "TRANSACTION.SUCCESS"));
    let paid = notify::transaction(&envelope, &key).unwrap();
    assert_eq!(paid.out_trade_no, "1217752501201407033233368018");
    assert_eq!(paid.transaction_id, "4200001863202305068344507881");
    assert_eq!((paid.amount.total, paid.trade_state.as_str()), (100, "SUCCESS"));
    assert_eq!(paid.payer.openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    // One byte of the ciphertext, or the associated data, changed: refused.
    let mut tampered = envelope.clone();
    let mut raw = base64::engine::general_purpose::STANDARD.decode(&tampered.resource.ciphertext).unwrap();
    raw[10] ^= 1;
    tampered.resource.ciphertext = base64::engine::general_purpose::STANDARD.encode(raw);
    assert!(matches!(
        notify::transaction(&tampered, &key),
        Err(notify::NotifyError::Decrypt(DecryptError::Authentication))
    ));
    let mut aad = envelope.clone();
    aad.resource.associated_data = "refund".into();
    assert!(matches!(notify::transaction(&aad, &key), Err(notify::NotifyError::Decrypt(_))));
    let wrong_key = ApiV3Key::new(&Secret::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb")).unwrap();
    assert!(notify::transaction(&envelope, &wrong_key).is_err());
    assert!(notify::envelope(b"<xml><return_code>SUCCESS</return_code></xml>").is_err(), "a v2 body is refused");
}

#[test]
fn bad_keys_are_named_never_shown() {
    let cases = [
        (MerchantKey::from_pem(&Secret::new(K2)).err(), "PRIVATE KEY"),
        (MerchantKey::from_pem(&Secret::new("garbage")).err(), "PRIVATE KEY"),
    ];
    for (error, words) in cases {
        let e = error.unwrap().to_string();
        assert!(e.contains(words) && !e.contains("MII"), "{e}");
    }
    assert!(PublicKey::from_pem(K1).is_err(), "a private key is not a public key");
    assert_eq!(format!("{:?}", k1()), "MerchantKey(***)");
}

/// The order body, a signed request and the replies, as the client will
/// send and read them: V3's body and header byte for byte, V8 and V9 as
/// replies, and what is not trusted.
#[test]
fn requests_and_replies_of_the_api() {
    use crate::wechat::v3::api::{self, JsapiAmount, JsapiOrder, JsapiPayer, ReplyError, Signer};
    use crate::wechat::v3::verify::{SignedHeaders, Verifier, VerifyError};
    let order = JsapiOrder {
        appid: "wxd678efh567hg6787",
        mchid: "1900007291",
        description: "Image形象店-深圳腾大-QQ公仔",
        out_trade_no: "1217752501201407033233368018",
        time_expire: None,
        attach: "",
        notify_url: "https://www.weixin.qq.com/wxpay/pay.php",
        amount: JsapiAmount { total: 100, currency: "CNY" },
        payer: JsapiPayer { openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
    };
    assert_eq!(order.body(), BODY3.as_bytes(), "the documented body, byte for byte");
    let signer = Signer {
        mchid: "1900007291".into(),
        serial_no: "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".into(),
        key: k1().into(),
        public_key_id: Some("PUB_KEY_ID_0000000000000024101100397200000006".into()),
    };
    let request = signer.sign("POST", "/v3/pay/transactions/jsapi", order.body(), 1_554_208_460, NONCE);
    let header = |name: &str| request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!(
        header("authorization"),
        Some(
            authorization("1900007291", "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB", 1_554_208_460, NONCE, V3_SIGNATURE)
                .as_str()
        )
    );
    assert_eq!(header("wechatpay-serial"), Some("PUB_KEY_ID_0000000000000024101100397200000006"));
    assert_eq!(header("content-type"), Some("application/json"));
    let get = signer.sign("GET", "/v3/refund/domestic/refunds/123123123123", Vec::new(), 1_554_208_460, NONCE);
    assert!(get.headers.iter().all(|(n, _)| *n != "content-type"), "no body, no content type");

    // Replies, with K1 playing WeChat under a public key id.
    let mut verifier = Verifier::default();
    verifier.add("PUB_KEY_ID_TEST", PublicKey::from_pem(K2).unwrap());
    let reply = br#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
    let signed = |ts, nonce, signature| SignedHeaders {
        timestamp: Some(ts),
        nonce: Some(nonce),
        signature: Some(signature),
        serial: Some("PUB_KEY_ID_TEST"),
    };
    let v8 = signed("1554208461", "e2a1d9c0b7f64e3a8d5c4b3a29180716", V8_SIGNATURE);
    assert_eq!(api::read_reply(200, &v8, reply, &verifier, 1_554_208_461).unwrap(), reply);
    let forged = br#"{"prepay_id":"wx201410272009395522657a690389285101"}"#;
    assert!(matches!(
        api::read_reply(200, &v8, forged, &verifier, 1_554_208_461),
        Err(ReplyError::Unverified(VerifyError::BadSignature(_)))
    ));
    assert!(
        matches!(
            api::read_reply(200, &SignedHeaders::default(), reply, &verifier, 1_554_208_461),
            Err(ReplyError::Unverified(VerifyError::Missing(_)))
        ),
        "an unsigned 200 is not trusted"
    );
    let v9 = signed("1554208462", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", V9_SIGNATURE);
    assert_eq!(api::read_reply(204, &v9, b"", &verifier, 1_554_208_462).unwrap(), b"");
    // An unsigned error (WeChat's 401 to a bad signature) is an error, code and all.
    let refused = r#"{"code":"SIGN_ERROR","message":"签名错误,请检查后再试"}"#.as_bytes();
    assert_eq!(
        api::read_reply(401, &SignedHeaders::default(), refused, &verifier, 0),
        Err(ReplyError::Api {
            status: 401, code: "SIGN_ERROR".into(), message: "签名错误,请检查后再试".into()
        })
    );
    // A signed error that does not verify is not believed either.
    let fake_error = br#"{"code":"ORDER_CLOSED","message":"x"}"#;
    assert!(matches!(api::read_reply(400, &v8, fake_error, &verifier, 1_554_208_461), Err(ReplyError::Unverified(_))));
    let proxy = api::read_reply(502, &SignedHeaders::default(), b"<html>bad gateway</html>", &verifier, 0);
    assert!(matches!(proxy, Err(ReplyError::Api { status: 502, ref code, .. }) if code == "HTTP_ERROR"));

    // wx.requestPayment: V1's paySign.
    let params = crate::wechat::jsapi::PayParams::rsa(
        "wx2421b1c4370ec43b",
        "wx201410272009395522657a690389285100",
        &k1(),
        1_554_208_460,
        NONCE.into(),
    );
    assert_eq!(
        (params.package.as_str(), params.sign_type.as_str()),
        ("prepay_id=wx201410272009395522657a690389285100", "RSA")
    );
    assert_eq!(params.pay_sign, V1_SIGNATURE);
    let json = serde_json::to_value(&params).unwrap();
    assert_eq!(json["timeStamp"], "1554208460", "a string, as wx.requestPayment wants");
    assert_eq!(json["signType"], "RSA");
}
