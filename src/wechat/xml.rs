//! The flat XML documents of WeChat Pay v2: `<xml><name>value</name>...</xml>`.
//!
//! Values may be plain text or CDATA (WeChat mixes both in one message). The
//! parser is strict on purpose: UTF-8 only, no DOCTYPE (so no external or
//! custom entities, the XXE hole of CVE-2018-13439), no nesting, no repeated
//! field, and a size limit, because every value feeds a signature check.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::Reader;

use super::sign::Fields;

/// The largest XML document accepted from anyone. WeChat's messages are a
/// few kilobytes; gopay allows 3 MB, we need far less.
pub const MAX_XML_BYTES: usize = 64 * 1024;

/// Why a body is not a WeChat Pay XML document. The text is safe to show the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The body is empty.
    #[error("the body is empty")]
    Empty,
    /// The body is larger than [`MAX_XML_BYTES`].
    #[error("the XML document is larger than {MAX_XML_BYTES} bytes")]
    TooLarge,
    /// The body is not UTF-8.
    #[error("the XML document is not valid UTF-8")]
    NotUtf8,
    /// A DOCTYPE declaration, refused so that no entity can be defined.
    #[error("DOCTYPE declarations are not allowed")]
    DocType,
    /// Anything else that is not a flat `<xml>` document.
    #[error("malformed XML: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> XmlError {
    XmlError::Malformed(what.into())
}

/// Parses a flat document whose root element is `root` (`xml` for WeChat Pay
/// messages) into its fields.
pub fn parse_with_root(body: &[u8], root: &str) -> Result<Fields, XmlError> {
    if body.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    let mut reader = Reader::from_str(text);
    let mut fields = Fields::new();
    // Where the parser is: before the root, inside it, inside a field, after it.
    let mut in_root = false;
    let mut root_done = false;
    let mut field: Option<(String, String)> = None;
    loop {
        let event = reader.read_event().map_err(|e| malformed(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::PI(_) => return Err(malformed("processing instructions are not allowed")),
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                if root_done {
                    return Err(malformed("content after the root element"));
                } else if !in_root {
                    if name != root {
                        return Err(malformed(format!("the root element must be <{root}>, not <{name}>")));
                    }
                    in_root = true;
                } else if let Some((outer, _)) = &field {
                    return Err(malformed(format!("element <{name}> nested in <{outer}>")));
                } else {
                    field = Some((name, String::new()));
                }
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                if !in_root || field.is_some() {
                    return Err(malformed(format!("unexpected empty element <{name}/>")));
                }
                insert(&mut fields, name, String::new())?;
            }
            Event::End(_) => match field.take() {
                Some((name, value)) => insert(&mut fields, name, value)?,
                None if in_root => {
                    in_root = false;
                    root_done = true;
                }
                None => return Err(malformed("unexpected closing tag")),
            },
            Event::Text(t) => {
                let t = t.xml_content().map_err(|e| malformed(e.to_string()))?;
                match &mut field {
                    Some((_, value)) => value.push_str(&t),
                    None if t.trim().is_empty() => {}
                    None => return Err(malformed("text outside a field element")),
                }
            }
            Event::CData(c) => {
                let c = c.xml_content().map_err(|e| malformed(e.to_string()))?;
                match &mut field {
                    Some((_, value)) => value.push_str(&c),
                    None => return Err(malformed("CDATA outside a field element")),
                }
            }
            Event::GeneralRef(r) => {
                let value = match &mut field {
                    Some((_, value)) => value,
                    None => return Err(malformed("entity reference outside a field element")),
                };
                if let Some(ch) = r.resolve_char_ref().map_err(|e| malformed(e.to_string()))? {
                    value.push(ch);
                } else {
                    let name = r.decode().map_err(|e| malformed(e.to_string()))?;
                    match resolve_predefined_entity(&name) {
                        Some(s) => value.push_str(s),
                        None => return Err(malformed(format!("unknown entity &{name};"))),
                    }
                }
            }
            Event::Eof => break,
        }
    }
    if !root_done {
        return Err(malformed(format!("no complete <{root}> element")));
    }
    Ok(fields)
}

/// Parses a WeChat Pay message (root `<xml>`).
pub fn parse(body: &[u8]) -> Result<Fields, XmlError> {
    parse_with_root(body, "xml")
}

fn insert(fields: &mut Fields, name: String, value: String) -> Result<(), XmlError> {
    // WeChat's field names are ASCII words (`coupon_fee_0`); anything else
    // could not be written back as the same element (found by fuzzing).
    let word = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !word {
        return Err(malformed(format!(
            "{:?} is not a field name (letters, digits and _)",
            name.escape_debug().to_string()
        )));
    }
    if fields.contains_key(&name) {
        return Err(malformed(format!("field <{name}> appears twice")));
    }
    fields.insert(name, value);
    Ok(())
}

/// Writes fields as a WeChat Pay XML document, every value in CDATA.
pub fn write(fields: &Fields) -> String {
    let mut out = String::with_capacity(64 + fields.len() * 48);
    out.push_str("<xml>");
    for (name, value) in fields {
        out.push('<');
        out.push_str(name);
        out.push_str("><![CDATA[");
        // "]]>" cannot appear inside CDATA: close and reopen around it.
        out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></");
        out.push_str(name);
        out.push('>');
    }
    out.push_str("</xml>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::sign::fields;

    #[test]
    fn field_names_are_words() {
        // Found by fuzzing: parsed as a field named "aN&//////", written back as something else.
        let e = parse(b"<xml><aN&///////></xml>").unwrap_err();
        assert!(e.to_string().contains("not a field name"), "{e}");
        assert!(parse(b"<xml><a-b>1</a-b></xml>").is_err());
        assert!(parse(b"<xml><coupon_fee_0>1</coupon_fee_0></xml>").is_ok());
    }

    #[test]
    fn cdata_plain_entities_and_declaration() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n<return_code><![CDATA[SUCCESS]]></return_code>\n\
                   <total_fee>1</total_fee>\n<body>a &amp; b &#x4E2D;</body><attach/><cash_fee><![CDATA[1]]></cash_fee></xml>";
        let f = parse(doc.as_bytes()).unwrap();
        assert_eq!(f["return_code"], "SUCCESS");
        assert_eq!(f["total_fee"], "1");
        assert_eq!(f["body"], "a & b 中");
        assert_eq!(f["attach"], "");
        assert_eq!(f["cash_fee"], "1");
    }

    #[test]
    fn values_are_not_trimmed() {
        let f = parse(b"<xml><out_trade_no> A1 </out_trade_no></xml>").unwrap();
        assert_eq!(f["out_trade_no"], " A1 ");
    }

    #[test]
    fn round_trip_including_cdata_terminator() {
        let f = fields([("body", "支付测试 ]]> <b>"), ("total_fee", "7")]);
        assert_eq!(parse(write(&f).as_bytes()).unwrap(), f);
    }

    #[test]
    fn refuses_what_is_not_a_flat_document() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"<xml><a>1</a>", "complete"),
            (b"<xml><a><b>1</b></a></xml>", "nested"),
            (b"<root><a>1</a></root>", "root element"),
            (b"<xml><a>1</a><a>2</a></xml>", "twice"),
            (b"<xml><a>&foo;</a></xml>", "entity"),
            (b"<xml><a>1</b></xml>", "malformed"),
            (b"<xml>text</xml>", "outside"),
            (b"<xml></xml><xml></xml>", "after"),
        ];
        for (doc, needle) in cases {
            let err = parse(doc).unwrap_err().to_string();
            assert!(err.contains(needle), "{:?}: {err}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn refuses_doctype_invalid_utf8_and_oversize() {
        let xxe =
            b"<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><a>&x;</a></xml>";
        assert_eq!(parse(xxe), Err(XmlError::DocType));
        assert_eq!(parse(b"<xml><a>\xff</a></xml>"), Err(XmlError::NotUtf8));
        let big = format!("<xml><a>{}</a></xml>", "x".repeat(MAX_XML_BYTES));
        assert_eq!(parse(big.as_bytes()), Err(XmlError::TooLarge));
    }
}
