//! What every parser of outside XML (PROPFIND listings, VOTables, RDs) shares: attribute values,
//! entity references, and the limits that keep a hostile document from costing more than its
//! size. quick-xml reports `&amp;` and `&#38;` as events of their own, outside the text.

use quick_xml::events::{BytesRef, BytesStart};

/// More attributes than any element of these documents has (namespace declarations count):
/// a start tag with thousands is an attack on the parser, not a listing.
pub const MAX_ATTRIBUTES: usize = 64;
/// Deeper than any element of these documents is nested.
pub const MAX_DEPTH: usize = 64;

/// The value of the attribute whose local name is `name`, entities resolved.
pub fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// What a reference in text stands for: a character reference, or one of XML's five
/// predefined entities. Anything else is an error: these documents declare no entities.
pub fn resolve(r: &BytesRef<'_>) -> Result<String, String> {
    if let Some(c) = r
        .resolve_char_ref()
        .map_err(|e| format!("bad reference: {e}"))?
    {
        return Ok(c.to_string());
    }
    Ok(match &**r {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "quot" => "\"",
        "apos" => "'",
        other => return Err(format!("unknown entity `&{}`", cut(other))),
    }
    .to_owned())
}

/// Refuses an element opened at `depth` (0: the root) past the limits, in time linear in its size.
pub fn within_limits(e: &BytesStart<'_>, depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!("elements nested deeper than {MAX_DEPTH}"));
    }
    // Without the duplicate check, which costs the square of the count.
    if e.attributes()
        .with_checks(false)
        .nth(MAX_ATTRIBUTES)
        .is_some()
    {
        return Err(format!(
            "<{}> has more than {MAX_ATTRIBUTES} attributes",
            cut(e.local_name().as_ref())
        ));
    }
    Ok(())
}

/// A name from the document, cut for an error message.
fn cut(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::Reader;
    use quick_xml::events::Event;

    fn first_start(xml: &str) -> BytesStart<'static> {
        let mut r = Reader::from_str(xml);
        loop {
            match r.read_event().unwrap() {
                Event::Start(e) | Event::Empty(e) => return e.into_owned(),
                Event::Eof => panic!("no element"),
                _ => {}
            }
        }
    }

    #[test]
    fn many_attributes_are_refused_by_count() {
        let attrs: String = (0..5000).map(|i| format!(" a{i}=\"v\"")).collect();
        let e = first_start(&format!("<x{attrs}/>"));
        let err = within_limits(&e, 0).unwrap_err();
        assert!(err.contains("more than 64 attributes"), "{err}");
        let ns: String = (0..5000).map(|i| format!(" xmlns:n{i}=\"u{i}\"")).collect();
        let e = first_start(&format!("<x{ns}/>"));
        assert!(within_limits(&e, 0).is_err());
        let e = first_start("<x a=\"1\" b=\"2\"/>");
        assert_eq!(within_limits(&e, 0), Ok(()));
        assert_eq!(
            within_limits(&e, MAX_DEPTH),
            Err("elements nested deeper than 64".into())
        );
    }

    #[test]
    fn references_resolve_or_are_named() {
        let mut r = Reader::from_str("<x>&amp;&#233;&#x41;&lt;&bogus;</x>");
        let mut got = Vec::new();
        loop {
            match r.read_event().unwrap() {
                Event::GeneralRef(g) => got.push(resolve(&g)),
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(
            got[..4],
            [
                Ok("&".into()),
                Ok("é".into()),
                Ok("A".into()),
                Ok("<".into())
            ]
        );
        assert_eq!(got[4], Err("unknown entity `&bogus`".into()));
    }
}
