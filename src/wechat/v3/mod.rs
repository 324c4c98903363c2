//! WeChat Pay API v3 (JSON, RSA signatures, AES-GCM), as WeChat defines it
//! (`../shared/WECHATPAY-V3.md` in the project's notes): for now the
//! cryptographic core, [`crypto`], which the client, the notify handler and
//! the simulator will share, checked against every published test vector.

pub mod crypto;
