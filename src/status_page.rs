//! `GET /lb-status`: a live status page for people, beside the JSON metrics for programs.
//!
//! One self-contained HTML document (inline CSS and JavaScript, no external assets, nothing to
//! download) embedded in the binary. The page polls the metrics JSON every second and draws
//! everything in the browser: a table per pool (its name, algorithm and healthy backends), and
//! per-backend state, rates and charts from the differences between successive samples, which
//! the page keeps for a minute. The server keeps no state for
//! it and only fills in where that JSON is served (`metricsPath`).

/// Where the page is served, next to `metricsPath`, on whichever listener serves the endpoints.
pub const PATH: &str = "/lb-status";

pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The page, with [`METRICS_PATH_PLACEHOLDER`] where the script's metrics path goes.
const TEMPLATE: &str = include_str!("status_page.html");

/// Stands in the template's script for the metrics path as a JavaScript string literal.
const METRICS_PATH_PLACEHOLDER: &str = "__METRICS_PATH__";

/// The page for a load balancer whose metrics JSON is served at `metrics_path`.
pub fn render(metrics_path: &str) -> Vec<u8> {
    TEMPLATE.replacen(METRICS_PATH_PLACEHOLDER, &script_string(metrics_path), 1).into_bytes()
}

/// `text` as a JavaScript string literal that is safe inside an HTML `<script>` element: JSON,
/// with `<`, `>` and `&` escaped as well, so that no `</script>` or `<!--` in it ends the element.
fn script_string(text: &str) -> String {
    let json = serde_json::Value::from(text).to_string();
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(metrics_path: &str) -> String {
        String::from_utf8(render(metrics_path)).unwrap()
    }

    #[test]
    fn the_metrics_path_is_filled_in_once_as_a_script_string() {
        assert_eq!(TEMPLATE.matches(METRICS_PATH_PLACEHOLDER).count(), 1);
        let html = page("/lb-metrics");
        assert!(!html.contains(METRICS_PATH_PLACEHOLDER));
        assert!(html.contains("const METRICS_PATH = \"/lb-metrics\";"));
    }

    #[test]
    fn the_metrics_path_is_json_escaped_and_cannot_end_the_script() {
        let html = page("/stats\"</script><script>alert(1)//\\&");
        assert!(
            html.contains(r#"const METRICS_PATH = "/stats\"\u003c/script\u003e\u003cscript\u003ealert(1)//\\\u0026";"#),
            "{html}"
        );
        assert_eq!(html.matches("</script>").count(), 1, "only the page's own script ends");
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = page("/lb-metrics");
        for scheme in ["http://", "https://", "//cdn", "www."] {
            assert!(!html.contains(scheme), "the page refers to {scheme}: it must not load anything from elsewhere");
        }
        for loads_something in ["@import", "<iframe", "<object", "<embed", "<img", "<script src"] {
            assert!(!html.contains(loads_something), "the page contains {loads_something}: keep everything inline");
        }
        for reference in ["href=", "src=", "url("] {
            for (at, _) in html.match_indices(reference) {
                let value = html[at + reference.len()..].trim_start_matches(['"', '\'']);
                let excerpt: String = html[at..].chars().take(40).collect();
                assert!(value.starts_with("data:"), "{reference} refers to something to download: {excerpt}");
            }
        }
        assert_eq!(html.matches("fetch(").count(), 1, "the one request it makes is for the metrics");
        assert!(html.contains("fetch(METRICS_PATH,"));
    }

    #[test]
    fn every_backend_state_has_a_badge_colour() {
        for state in ["healthy", "unhealthy", "ejected"] {
            assert!(TEMPLATE.contains(&format!(".badge[data-state=\"{state}\"]")), "no colour for {state}");
        }
    }
}
