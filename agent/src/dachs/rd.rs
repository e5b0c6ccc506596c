//! What the agent needs to know of a resource descriptor without DaCHS: its schema and the
//! tables it puts on disk for ADQL, which the post-apply health check queries one by one.
//! Everything else about an RD is DaCHS's to judge (`dachs val`).

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::xml::attr;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct RdError {
    pub path: String,
    pub reason: String,
}

/// `schema.table` for every `<table onDisk="True" adql="True">` of the resource, in order.
pub fn adql_tables(path: &str, xml: &str) -> Result<Vec<String>, RdError> {
    let fail = |reason: String| RdError {
        path: path.to_owned(),
        reason,
    };
    let mut reader = Reader::from_str(xml);
    let mut schema: Option<String> = None;
    let mut tables = Vec::new();
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            fail(format!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            ))
        })?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let open = matches!(event, Event::Start(_));
                match (depth, e.local_name().as_ref()) {
                    (0, "resource") => {
                        schema = attr(e, "schema");
                    }
                    (0, other) => {
                        return Err(fail(format!(
                            "the root element is <{}>, not <resource>",
                            other
                        )));
                    }
                    (1, "table") => {
                        let yes = |name: &str| {
                            attr(e, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
                        };
                        if yes("onDisk") && yes("adql") {
                            let id = attr(e, "id")
                                .ok_or_else(|| fail("an onDisk table has no id".into()))?;
                            let schema = schema
                                .as_deref()
                                .ok_or_else(|| fail("<resource> has no schema attribute".into()))?;
                            tables.push(format!("{schema}.{id}"));
                        }
                    }
                    _ => {}
                }
                if open {
                    depth += 1;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof if depth > 0 => {
                return Err(fail(
                    "not well-formed XML: it ends inside an element".into(),
                ));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if schema.is_none() {
        return Err(fail("no <resource schema=\"...\"> element".into()));
    }
    for t in &tables {
        // The names go into an ADQL query: identifiers only.
        if !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(fail(format!("`{t}` is not a plain ADQL table name")));
        }
    }
    Ok(tables)
}

/// Whether the RD imports incrementally: a `<data updating="True">` reads only new and changed
/// sources (with `ignoreSources fromdbUpdating`); without one, `dachs imp` drops the table and
/// reads every source again. Anything unreadable counts as a full import, the safe guess.
pub fn imports_incrementally(xml: &str) -> bool {
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(ref ev @ (Event::Start(ref e) | Event::Empty(ref e))) => {
                if depth == 1
                    && e.local_name().as_ref() == "data"
                    && attr(e, "updating").is_some_and(|v| v.eq_ignore_ascii_case("true"))
                {
                    return true;
                }
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) | Err(_) => return false,
            _ => {}
        }
    }
}

/// A `<regSuite>` of the RD: the provider's own regression tests, run by `dachs test`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suite {
    pub title: String,
    /// Tests that run with the tag (untagged ones, and those tagged with it).
    pub tests: usize,
    /// Tests left out: tagged for another environment.
    pub skipped: usize,
}

/// The RD's regression suites, as `dachs test -t <tag>` would run them (an empty tag: the
/// untagged tests only). A suite without a title is named by its position. Unreadable XML has
/// no suites here: `dachs val` judges it first.
pub fn regression_suites(xml: &str, tag: &str) -> Vec<Suite> {
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    let mut suites: Vec<Suite> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(ref ev @ (Event::Start(ref e) | Event::Empty(ref e))) => {
                match (depth, e.local_name().as_ref()) {
                    (1, "regSuite") => suites.push(Suite {
                        title: attr(e, "title")
                            .unwrap_or_else(|| format!("suite {}", suites.len() + 1)),
                        tests: 0,
                        skipped: 0,
                    }),
                    (2, "regTest") => {
                        if let Some(suite) = suites.last_mut() {
                            let tags = attr(e, "tags").unwrap_or_default();
                            let mut listed = tags
                                .split([',', ' ', '\t', '\n'])
                                .filter(|t| !t.is_empty())
                                .peekable();
                            let runs = listed.peek().is_none() || listed.any(|t| t == tag);
                            if runs {
                                suite.tests += 1;
                            } else {
                                suite.skipped += 1;
                            }
                        }
                    }
                    _ => {}
                }
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    suites
}

/// How many tests `dachs test -t <tag>` would run of the RD's suites.
pub fn regression_test_count(xml: &str, tag: &str) -> usize {
    regression_suites(xml, tag).iter().map(|s| s.tests).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_suites_count_the_tests_a_tag_runs() {
        let xml = r#"<resource schema="s">
          <regSuite title="basics">
            <regTest title="a"><url>/x</url></regTest>
            <regTest title="b" tags="deploy"><url>/y</url></regTest>
            <regTest title="c" tags="dev, local"/>
          </regSuite>
          <regSuite><regTest title="d" tags="deploy,dev"/></regSuite>
          <table id="t"><regSuite title="not at the top"/></table>
        </resource>"#;
        let suite = |title: &str, tests, skipped| Suite {
            title: title.into(),
            tests,
            skipped,
        };
        assert_eq!(
            regression_suites(xml, "deploy"),
            [suite("basics", 2, 1), suite("suite 2", 1, 0)]
        );
        assert_eq!(
            regression_suites(xml, "dev"),
            [suite("basics", 2, 1), suite("suite 2", 1, 0)]
        );
        assert_eq!(
            regression_suites(xml, ""),
            [suite("basics", 1, 2), suite("suite 2", 0, 1)]
        );
        assert!(regression_suites("<resource schema='s'/>", "deploy").is_empty());
        assert!(regression_suites("<resource", "deploy").is_empty());
    }

    #[test]
    fn an_updating_data_element_means_incremental_imports() {
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/service/epnlab/q.rd"
        ))
        .unwrap();
        assert!(imports_incrementally(&example));
        for full in [
            "<resource schema=\"s\"><data id=\"import\"><sources>x</sources></data></resource>",
            "<resource schema=\"s\"><data updating=\"False\"/></resource>",
            // Only the RD's own data elements count, not a nested element of that name.
            "<resource schema=\"s\"><table><data updating=\"True\"/></table></resource>",
            "<resource schema=\"s\"><data updating=\"True\"",
            "",
        ] {
            assert!(!imports_incrementally(full), "{full}");
        }
    }

    #[test]
    fn the_example_rd_has_one_adql_table() {
        let xml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/service/epnlab/q.rd"
        ))
        .unwrap();
        assert_eq!(adql_tables("q.rd", &xml).unwrap(), ["epnlab.epn_core"]);
    }

    #[test]
    fn bad_rds_are_refused_with_a_reason() {
        for (xml, want) in [
            (
                "<resource schema='s'><table id='t' onDisk='True' adql='True'>",
                "not well-formed",
            ),
            ("<html/>", "root element is <html>"),
            (
                "<resource><table id='t' onDisk='True' adql='True'/></resource>",
                "no schema",
            ),
            (
                "<resource schema='s'><table onDisk='True' adql='True'/></resource>",
                "no id",
            ),
            (
                "<resource schema='s;drop'><table id='t' onDisk='True' adql='True'/></resource>",
                "plain ADQL",
            ),
            ("", "no <resource"),
        ] {
            let e = adql_tables("q.rd", xml).unwrap_err().to_string();
            assert!(e.contains(want), "{xml}: {e}");
        }
        let hidden = "<resource schema='s'><table id='t' onDisk='True'/><table id='u' adql='True'/></resource>";
        assert!(adql_tables("q.rd", hidden).unwrap().is_empty());
    }
}
