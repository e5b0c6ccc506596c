//! Reading the VOTable that DaCHS's TAP service answers with, as far as the agent needs it:
//! the `QUERY_STATUS` INFO (DaCHS reports a failed query with HTTP 200, so the status is the
//! only truth) and the cells of a TABLEDATA table.

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::xml::{attr, resolve, within_limits};

/// What a TAP answer says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// `OK`, `ERROR` or `OVERFLOW` (the rows were cut at MAXREC, still a success).
    pub status: Option<String>,
    /// The text of the QUERY_STATUS INFO: DaCHS puts the error message there.
    pub message: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a readable VOTable: {0}")]
pub struct VotableError(pub String);

/// Whether a VOSI availability document says `available` is true.
pub fn is_available(xml: &str) -> bool {
    let mut reader = Reader::from_str(xml);
    let mut text: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.local_name().as_ref() == "available" => {
                text = Some(String::new());
            }
            Ok(Event::Text(t)) => {
                if let Some(acc) = text.as_mut() {
                    acc.push_str(&t.xml10_content());
                }
            }
            Ok(Event::End(e)) if e.local_name().as_ref() == "available" => {
                return text.is_some_and(|v| v.trim() == "true");
            }
            Ok(Event::Eof) | Err(_) => return false,
            _ => {}
        }
    }
}

pub fn parse(xml: &str) -> Result<Answer, VotableError> {
    let mut reader = Reader::from_str(xml);
    let mut answer = Answer::default();
    let mut in_status = false;
    let mut cell: Option<String> = None;
    let mut row: Option<Vec<String>> = None;
    let mut saw_votable = false;
    let mut depth = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| VotableError(format!("at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                within_limits(e, depth).map_err(VotableError)?;
                let open = matches!(event, Event::Start(_));
                if open {
                    depth += 1;
                }
                match e.local_name().as_ref() {
                    "VOTABLE" => saw_votable = true,
                    // A trailing OVERFLOW INFO follows the first status; the first one decides.
                    "INFO"
                        if answer.status.is_none()
                            && attr(e, "name").as_deref() == Some("QUERY_STATUS") =>
                    {
                        answer.status = attr(e, "value");
                        in_status = open;
                    }
                    "FIELD" => answer.columns.push(attr(e, "name").unwrap_or_default()),
                    "TR" if open => row = Some(Vec::new()),
                    "TD" if open => cell = Some(String::new()),
                    "TD" => {
                        if let Some(r) = row.as_mut() {
                            r.push(String::new());
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                if in_status {
                    answer.message.push_str(&text);
                } else if let Some(c) = cell.as_mut() {
                    c.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = resolve(&r).map_err(VotableError)?;
                if in_status {
                    answer.message.push_str(&resolved);
                } else if let Some(c) = cell.as_mut() {
                    c.push_str(&resolved);
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    "INFO" => in_status = false,
                    "TD" => {
                        if let (Some(c), Some(r)) = (cell.take(), row.as_mut()) {
                            r.push(c);
                        }
                    }
                    "TR" => {
                        if let Some(r) = row.take() {
                            answer.rows.push(r);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_votable {
        return Err(VotableError("no VOTABLE element".into()));
    }
    answer.message = answer.message.trim().to_owned();
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_is_read_from_the_document_not_guessed() {
        let ok = r#"<avl:availability xmlns:avl="http://www.ivoa.net/xml/VOSIAvailability/v1.0"><avl:available>true</avl:available></avl:availability>"#;
        assert!(is_available(ok));
        for bad in [
            r#"<avl:availability xmlns:avl="x"><avl:available>false</avl:available><avl:note>true</avl:note></avl:availability>"#,
            "<html>available true</html>",
            "",
            "<available>true",
            "<available>tru",
        ] {
            assert!(!is_available(bad), "{bad}");
        }
    }

    const OK: &str = r#"<?xml version='1.0' encoding='utf-8'?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE type="results">
<INFO name="QUERY_STATUS" value="OK">Query successful</INFO>
<TABLE name="tables"><FIELD ID="n" datatype="int" name="n"/><FIELD name="s" datatype="char" arraysize="*"/>
<DATA><TABLEDATA><TR><TD>6</TD><TD>a &amp; b</TD></TR><TR><TD>7</TD><TD/></TR></TABLEDATA></DATA></TABLE>
<INFO name="QUERY_STATUS" value="OVERFLOW"/></RESOURCE></VOTABLE>"#;

    #[test]
    fn reads_status_columns_and_rows() {
        let a = parse(OK).unwrap();
        assert_eq!(a.status.as_deref(), Some("OK"));
        assert_eq!(a.columns, ["n", "s"]);
        assert_eq!(a.rows, [vec!["6", "a & b"], vec!["7", ""]]);
    }

    #[test]
    fn reads_the_error_message() {
        let x = r#"<VOTABLE><RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">Field query: Could not locate table 'nope.t'</INFO></RESOURCE></VOTABLE>"#;
        let a = parse(x).unwrap();
        assert_eq!(a.status.as_deref(), Some("ERROR"));
        assert_eq!(a.message, "Field query: Could not locate table 'nope.t'");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "<html>proxy error</html>",
            "<VOTABLE><INFO",
            "\u{0}\u{1}",
            "<VOTABLE></RESOURCE>",
        ] {
            let r = parse(bad);
            assert!(
                r.is_err() || r.as_ref().unwrap().status.is_none(),
                "{bad:?}: {r:?}"
            );
        }
    }
}
