//! The HTML report, opened in a real headless browser (Chromium): its charts must render.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use phalanx_core::testing::skip;

/// `CHROMIUM`, else the first of Debian's Chromium binaries on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let paths = std::env::var_os("PATH")?;
    ["chromium", "chromium-headless-shell", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&paths).map(move |dir| dir.join(name)))
        .find(|path| path.is_file())
}

/// The DOM of `page` after its scripts ran, as Chromium dumps it.
fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> String {
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("chromium can be waited for").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("chromium's output");
    assert!(output.status.success(), "chromium failed: {}", output.status);
    String::from_utf8(output.stdout).expect("the DOM is UTF-8")
}

/// The text between `<tag` and its closing `</tag>`, for every occurrence.
fn elements<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let Some(end) = rest[start..].find(&close) else { break };
        found.push(&rest[start..start + end + close.len()]);
        rest = &rest[start + end + close.len()..];
    }
    found
}

/// The value of `attribute` in the first tag that has `id="<id>"`.
fn attribute(html: &str, id: &str, attribute: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let key = format!("{attribute}=\"");
    let value_start = tag.find(&key)? + key.len();
    Some(tag[value_start..value_start + tag[value_start..].find('"')?].to_owned())
}

#[test]
fn the_html_report_is_self_contained_and_its_charts_render_in_chromium() {
    let service = common::start_service();
    let dir = common::scratch("html_report");
    let page = dir.join("report.html");
    common::run_loadtest(&service, &["--quiet".as_ref(), "--html".as_ref(), page.as_os_str()]);
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained: nothing to fetch (the only URLs are the target's, in text, and SVG's
    // namespace).
    for reference in ["src=", "href=", "<link", "url(", "@import", "<img", "<iframe"] {
        assert!(!html.contains(reference), "the report refers to something outside it: {reference}");
    }
    // Three charts as inline SVG with their data drawn: lines over time, bars in the histogram.
    let svgs = elements(&html, "svg");
    assert_eq!(svgs.len(), 3, "three charts");
    for (color, line) in [("#1F77B4", "p50"), ("#FF7F0E", "p90"), ("#2CA02C", "p99"), ("#D62728", "p99.9")] {
        assert_eq!(svgs[0].matches(&format!("stroke=\"{color}\"")).count(), 1, "the {line} line");
    }
    for (color, line) in [("#1F77B4", "sent"), ("#2CA02C", "answered"), ("#D62728", "errors")] {
        assert_eq!(svgs[1].matches(&format!("stroke=\"{color}\"")).count(), 1, "the {line} line");
    }
    assert!(svgs[0].matches("<polyline").count() > 4 && !svgs[0].contains("points=\"\""), "axes and lines");
    assert!(svgs[2].matches("fill=\"#1F77B4\"").count() >= 2, "histogram bars");
    // The server's /status before and after, and the summary.
    assert_eq!(html.matches("&quot;sections&quot;").count(), 2, "/status before and after");
    assert!(html.contains("latency p99.9") && html.contains("--html"), "summary and command line");

    let Some(chromium) = chromium() else {
        skip(
            "the_html_report_is_self_contained_and_its_charts_render_in_chromium",
            "no Chromium (apt-get install chromium, or set CHROMIUM): the charts were not checked in a browser",
        );
        return;
    };
    let dom = dump_dom(&chromium, &page, &dir.join("profile"));
    assert_eq!(attribute(&dom, "render-check", "data-charts").as_deref(), Some("3"), "the page's script ran");
    assert_eq!(
        attribute(&dom, "render-check", "data-status").as_deref(),
        Some("ok"),
        "every chart drew elements of a non-empty size in its series' colours; drawn: {:?}",
        attribute(&dom, "render-check", "data-drawn")
    );
    for chart in ["latency-over-time", "throughput-over-time", "latency-histogram"] {
        let drawn: usize = attribute(&dom, chart, "data-drawn-elements").and_then(|n| n.parse().ok()).unwrap_or(0);
        let least = if chart == "latency-histogram" { 2 } else { 3 };
        assert!(drawn >= least, "{chart}: {drawn} elements drawn");
    }
    assert_eq!(elements(&dom, "svg").len(), 3, "the browser parsed three SVG charts");
}
