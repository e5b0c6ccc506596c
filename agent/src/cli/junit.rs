//! The checks of `check-service` as a JUnit XML report, the format GitLab shows in a merge
//! request (`artifacts:reports:junit`): one test case per check, a failure per finding.

use std::fmt::Write;
use std::time::Duration;

/// One check: passed, failed (the commit would be refused) or not made (an error).
pub struct Case {
    pub name: String,
    pub seconds: f64,
    pub outcome: Outcome,
}

pub enum Outcome {
    Passed,
    /// The findings, each `FILE:LINE:COL: message`.
    Failed(Vec<String>),
    /// Why the check could not be made.
    Error(String),
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters, not even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The report of `cases`, which took `total` in all.
pub fn render(cases: &[Case], total: Duration) -> String {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
        .count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Error(_)))
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let head = format!(
        "name=\"vespa-agent check-service\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\"",
        cases.len(),
        total.as_secs_f64()
    );
    let _ = writeln!(x, "<testsuites {head}>");
    let _ = writeln!(x, "  <testsuite {head}>");
    for c in cases {
        let open = format!(
            "    <testcase classname=\"check-service\" name=\"{}\" time=\"{:.3}\"",
            escape(&c.name),
            c.seconds
        );
        match &c.outcome {
            Outcome::Passed => {
                let _ = writeln!(x, "{open}/>");
            }
            Outcome::Failed(findings) => {
                let _ = writeln!(x, "{open}>");
                let _ = writeln!(
                    x,
                    "      <failure type=\"refused\" message=\"{}\">{}</failure>",
                    escape(findings.first().map_or("", String::as_str)),
                    escape(&findings.join("\n"))
                );
                let _ = writeln!(x, "    </testcase>");
            }
            Outcome::Error(why) => {
                let _ = writeln!(x, "{open}>");
                let _ = writeln!(
                    x,
                    "      <error type=\"not checked\" message=\"{}\"/>",
                    escape(why)
                );
                let _ = writeln!(x, "    </testcase>");
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_and_escapes() {
        let cases = [
            Case {
                name: "tree".into(),
                seconds: 0.1,
                outcome: Outcome::Passed,
            },
            Case {
                name: "comets: dachs val".into(),
                seconds: 1.5,
                outcome: Outcome::Failed(vec!["comets/q.rd:3:7: <bad> & \"worse\"\u{1}".into()]),
            },
            Case {
                name: "scratch DaCHS".into(),
                seconds: 0.0,
                outcome: Outcome::Error("no PostgreSQL".into()),
            },
        ];
        let x = render(&cases, Duration::from_millis(1600));
        assert!(x.contains("tests=\"3\" failures=\"1\" errors=\"1\" time=\"1.600\""));
        assert!(x.contains("comets/q.rd:3:7: &lt;bad&gt; &amp; &quot;worse&quot;?"));
        assert!(!x.contains('\u{1}'));
        assert_eq!(x.matches("<testcase").count(), 3);
    }
}
