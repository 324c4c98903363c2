//! Notify verification (v2): any body is parsed and its signature checked
//! under both algorithms without a panic; a forged body never verifies
//! unless it carries the right signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paybridge::secret::Secret;
use paybridge::wechat::sign::{self, SignType};
use paybridge::wechat::xml;

fuzz_target!(|data: &[u8]| {
    let key = Secret::new("192006250b4c09247ec02edce69f6a2d");
    let Ok(fields) = xml::parse(data) else { return };
    for accepted in [&[SignType::Md5][..], &[SignType::HmacSha256, SignType::Md5][..]] {
        if sign::verify(&fields, &key, accepted).is_ok() {
            // Only possible if the input carries the signature of its own fields.
            let given = fields.get("sign").expect("a verified notify has a sign");
            let expected: Vec<String> = accepted.iter().map(|t| sign::sign(&fields, &key, *t)).collect();
            assert!(expected.iter().any(|e| e.eq_ignore_ascii_case(given)));
        }
    }
});
