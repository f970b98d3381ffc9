//! The `compare --out FILE.svg` chart, drawn with plain string formatting.
//!
//! One row per algorithm: its name, a horizontal bar split into each backend's share of the
//! successful answers (one colour per backend, with a legend), a small throughput bar scaled to
//! the fastest algorithm, then p50/p99 latency, errors and retries as text. The document is
//! self-contained (no fonts, scripts or styles from elsewhere) with a white background, so it
//! reads the same in a browser and on GitHub. Every piece of text is escaped.

use std::fmt::Write;

use super::summary::AlgorithmResult;

/// What the chart shows.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    pub title: &'a str,
    /// Lines of smaller text under the title.
    pub notes: &'a [String],
    /// Backend names, in the order of each result's shares.
    pub backends: &'a [&'a str],
    pub results: &'a [AlgorithmResult],
}

/// Backend colours (fill, text drawn on it), used in turn; from Tableau's 10-colour palette.
const PALETTE: [(&str, &str); 10] = [
    ("#4e79a7", "#ffffff"),
    ("#f28e2b", "#000000"),
    ("#59a14f", "#ffffff"),
    ("#e15759", "#ffffff"),
    ("#76b7b2", "#000000"),
    ("#edc948", "#000000"),
    ("#b07aa1", "#ffffff"),
    ("#ff9da7", "#000000"),
    ("#9c755f", "#ffffff"),
    ("#bab0ac", "#000000"),
];

const MARGIN: f64 = 20.0;
/// Roughly the width of one character at the chart's font size, for laying out names.
const CHAR_WIDTH: f64 = 7.5;
const ROW_HEIGHT: f64 = 32.0;
const BAR_HEIGHT: f64 = 20.0;
const SHARE_BAR_WIDTH: f64 = 380.0;
const THROUGHPUT_BAR_WIDTH: f64 = 110.0;
/// A share narrower than this has no percentage written on it.
const LABELLED_SEGMENT_WIDTH: f64 = 34.0;

/// Where each column starts.
struct Columns {
    share: f64,
    throughput: f64,
    latency: f64,
    errors: f64,
    width: f64,
}

impl Columns {
    fn for_chart(chart: &Chart<'_>) -> Columns {
        let longest_name = chart.results.iter().map(|result| result.algorithm.chars().count()).max().unwrap_or(0);
        let share = MARGIN + (longest_name as f64 * CHAR_WIDTH + 16.0).max(150.0);
        let throughput = share + SHARE_BAR_WIDTH + 24.0;
        let latency = throughput + THROUGHPUT_BAR_WIDTH + 90.0;
        let errors = latency + 190.0;
        Columns { share, throughput, latency, errors, width: errors + 170.0 }
    }
}

/// The chart as a complete SVG document.
pub fn render(chart: &Chart<'_>) -> String {
    let columns = Columns::for_chart(chart);
    let notes_bottom = 36.0 + 18.0 * chart.notes.len() as f64;
    let legend_y = notes_bottom + 26.0;
    let headings_y = legend_y + 36.0;
    let rows_top = headings_y + 12.0;
    let height = rows_top + ROW_HEIGHT * chart.results.len() as f64 + 36.0;
    let width = columns.width;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="13" fill="#222222">"##
    );
    let _ = writeln!(svg, r##"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##);
    let _ =
        writeln!(svg, r#"<text x="{MARGIN}" y="32" font-size="18" font-weight="bold">{}</text>"#, escape(chart.title));
    for (index, note) in chart.notes.iter().enumerate() {
        let y = 54.0 + 18.0 * index as f64;
        let _ = writeln!(svg, r##"<text x="{MARGIN}" y="{y:.1}" fill="#555555">{}</text>"##, escape(note));
    }
    legend(&mut svg, chart.backends, legend_y);
    let headings = [
        (MARGIN, "algorithm"),
        (columns.share, "share of successful answers"),
        (columns.throughput, "throughput"),
        (columns.latency, "latency p50 / p99"),
        (columns.errors, "errors / retries"),
    ];
    for (x, heading) in headings {
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{headings_y:.1}" font-weight="bold" fill="#555555">{heading}</text>"##
        );
    }
    let fastest = chart.results.iter().map(AlgorithmResult::throughput).fold(0.0, f64::max);
    for (index, result) in chart.results.iter().enumerate() {
        row(&mut svg, &columns, chart.backends, result, fastest, rows_top + ROW_HEIGHT * index as f64);
    }
    svg.push_str("</svg>\n");
    svg
}

/// One coloured square and name per backend, in a line starting at `y`.
fn legend(svg: &mut String, backends: &[&str], y: f64) {
    let mut x = MARGIN;
    for (index, backend) in backends.iter().enumerate() {
        let (fill, _) = PALETTE[index % PALETTE.len()];
        let _ = writeln!(svg, r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{fill}"/>"#, y - 11.0);
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{y:.1}">{}</text>"#, x + 17.0, escape(backend));
        x += 17.0 + backend.chars().count() as f64 * CHAR_WIDTH + 24.0;
    }
}

/// One algorithm's row, its top at `top`.
fn row(svg: &mut String, columns: &Columns, backends: &[&str], result: &AlgorithmResult, fastest: f64, top: f64) {
    let text_y = top + BAR_HEIGHT / 2.0 + 4.5;
    let _ = writeln!(svg, r#"<g class="row">"#);
    let _ = writeln!(svg, r#"<text x="{MARGIN}" y="{text_y:.1}">{}</text>"#, escape(&result.algorithm));
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{top:.1}" width="{SHARE_BAR_WIDTH}" height="{BAR_HEIGHT}" fill="#eeeeee"/>"##,
        columns.share
    );
    let mut x = columns.share;
    for (index, (backend, share)) in backends.iter().zip(&result.shares).enumerate() {
        let segment = SHARE_BAR_WIDTH * share.clamp(0.0, 100.0) / 100.0;
        if segment <= 0.0 {
            continue;
        }
        let (fill, ink) = PALETTE[index % PALETTE.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{top:.1}" width="{segment:.1}" height="{BAR_HEIGHT}" fill="{fill}"><title>{}: {share:.1}%</title></rect>"#,
            escape(backend)
        );
        if segment >= LABELLED_SEGMENT_WIDTH {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{text_y:.1}" fill="{ink}" font-size="11" text-anchor="middle">{share:.0}%</text>"#,
                x + segment / 2.0
            );
        }
        x += segment;
    }
    let throughput = result.throughput();
    let bar = if fastest > 0.0 { THROUGHPUT_BAR_WIDTH * throughput / fastest } else { 0.0 };
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="10" fill="#888888"/>"##,
        columns.throughput,
        top + 5.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{text_y:.1}">{throughput:.0} req/s</text>"#,
        columns.throughput + THROUGHPUT_BAR_WIDTH + 6.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{text_y:.1}">{:.2} ms / {:.2} ms</text>"#,
        columns.latency,
        result.p50.as_secs_f64() * 1000.0,
        result.p99.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{text_y:.1}">{} / {}</text>"#,
        columns.errors, result.errors, result.retries
    );
    let _ = writeln!(svg, "</g>");
}

/// `text` safe inside an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\t' && c != '\n' => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn result(algorithm: &str, shares: Vec<f64>) -> AlgorithmResult {
        AlgorithmResult {
            algorithm: algorithm.to_string(),
            requests: 1000,
            elapsed: Duration::from_secs(1),
            errors: 2,
            retries: 250,
            p50: Duration::from_micros(500),
            p99: Duration::from_millis(21),
            shares,
        }
    }

    fn chart_of(results: &[AlgorithmResult], backends: &[&str]) -> String {
        let notes = ["8 clients \"quoted\"".to_string(), "second & last".to_string()];
        render(&Chart { title: "Title & <more>", notes: &notes, backends, results })
    }

    /// Checks that every element is closed in order, and returns the element names seen.
    fn balanced_elements(document: &str) -> Vec<String> {
        let mut open: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = document;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("every tag ends") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "a stray '<' inside {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "closing tag out of order");
            } else {
                let name = tag.split_whitespace().next().unwrap().trim_end_matches('/').to_string();
                if !tag.ends_with('/') {
                    open.push(name.clone());
                }
                seen.push(name);
            }
            let text = &rest[end + 1..];
            let next = text.find('<').unwrap_or(text.len());
            assert!(!text[..next].contains('>'), "unescaped '>' in text {:?}", &text[..next]);
            for (offset, _) in text[..next].match_indices('&') {
                let entity = &text[offset..next];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|known| entity.starts_with(known)),
                    "a bare '&' in text: {entity:?}"
                );
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "left open: {open:?}");
        seen
    }

    #[test]
    fn a_well_formed_self_contained_document() {
        let results = [result("round_robin", vec![50.0, 50.0, 0.0]), result("least_conn", vec![70.0, 25.0, 5.0])];
        let svg = chart_of(&results, &["fast-1", "slow", "failing"]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("fill=\"#ffffff\"") && svg.contains("sans-serif"));
        let elements = balanced_elements(&svg);
        assert_eq!(elements.first().map(String::as_str), Some("svg"));
        assert_eq!(elements.iter().filter(|name| *name == "svg").count(), 1);
        for forbidden in ["script", "image", "style", "foreignObject"] {
            assert!(!elements.iter().any(|name| name == forbidden), "{forbidden}");
        }
        assert!(!svg.contains("href"), "nothing from elsewhere");
    }

    #[test]
    fn one_row_per_algorithm_and_a_legend_entry_per_backend() {
        let names = ["round_robin", "weighted_round_robin", "least_conn", "ip_hash", "some_new_one"];
        let results: Vec<AlgorithmResult> = names.iter().map(|name| result(name, vec![40.0, 60.0])).collect();
        let svg = chart_of(&results, &["fast-1", "slow"]);
        assert_eq!(svg.matches("<g class=\"row\">").count(), names.len());
        for name in names {
            assert_eq!(svg.matches(&format!(">{name}</text>")).count(), 1, "{name}");
        }
        assert_eq!(svg.matches(">fast-1</text>").count(), 1, "legend");
        assert_eq!(svg.matches("<title>slow: 60.0%</title>").count(), names.len());
        assert_eq!(svg.matches("<title>").count(), 2 * names.len(), "one segment per backend with a share");
        balanced_elements(&svg);
    }

    #[test]
    fn every_text_is_escaped() {
        let results = [result("a<b>&\"c'", vec![100.0])];
        let svg = chart_of(&results, &["back&end<1>"]);
        assert!(svg.contains("a&lt;b&gt;&amp;&quot;c&apos;"), "{svg}");
        assert!(svg.contains("back&amp;end&lt;1&gt;"), "{svg}");
        assert!(svg.contains("Title &amp; &lt;more&gt;") && svg.contains("8 clients &quot;quoted&quot;"));
        assert!(svg.contains(">second &amp; last</text>"));
        assert!(!svg.contains("a<b") && !svg.contains("end<1"));
        balanced_elements(&svg);
        assert_eq!(escape("tab\tok, bell\u{7} not"), "tab\tok, bell  not");
    }

    #[test]
    fn an_empty_comparison_is_still_a_document() {
        let svg = chart_of(&[], &[]);
        assert_eq!(svg.matches("<g class=\"row\">").count(), 0);
        balanced_elements(&svg);
    }
}
