//! Opens a real replay's `report.html` in headless Chromium and checks that
//! every chart rendered: the page's own script measures each chart after
//! layout and marks its `<figure>` (`data-rendered`: shapes with a
//! non-empty box; `data-text`: labels with a width), and `--dump-dom`
//! hands back the marked page.
//!
//! The browser is `$BALLAST_CHROMIUM`, else `chromium` or `chromium-browser`
//! on `PATH` (Debian's package; `scripts/setup.sh` installs it). Without
//! one the test is skipped with a message, unless `CI` or
//! `BALLAST_REQUIRE_CHROMIUM` is set, where it fails.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ballast_replay::report::render_html;
use ballast_replay::synth::{Generator, TraceShape};
use ballast_replay::{Context, Interval, PolicySpec, Replay, ReportData};
use ballast_solver::Topology;

/// How long the browser may take before the test gives up on it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
const WINDOWS: u64 = 24;

#[test]
fn every_chart_of_a_replay_report_renders_in_chromium() {
    let Some(browser) = chromium() else {
        let required = ["CI", "BALLAST_REQUIRE_CHROMIUM"]
            .into_iter()
            .find(|name| env::var_os(name).is_some_and(|v| !v.is_empty()));
        if let Some(name) = required {
            panic!(
                "no Chromium found (set BALLAST_CHROMIUM, or put `chromium` on PATH: \
                 scripts/setup.sh installs it), and {name} is set, so the report's browser test may not be skipped"
            );
        }
        eprintln!(
            "SKIPPED every_chart_of_a_replay_report_renders_in_chromium: no Chromium found \
             (BALLAST_CHROMIUM unset, no `chromium` or `chromium-browser` on PATH); \
             scripts/setup.sh installs it"
        );
        return;
    };

    let data = replay();
    assert!(
        data.hottest.is_some(),
        "the replay scored windows, so it has a hottest one"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("report_chromium_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    fs::write(&page, render_html(&data)).unwrap();

    let started = Instant::now();
    let dom = dump_dom(&browser, &page, &dir.join("profile"));
    eprintln!("chromium took {:.1} s", started.elapsed().as_secs_f64());

    assert_eq!(
        attribute(
            tag(&dom, "<body").expect("a <body> in the dumped DOM"),
            "data-charts-rendered"
        )
        .as_deref(),
        Some("4"),
        "the page's script marks four rendered charts"
    );
    for id in ["experienced", "reloads", "pareto", "heatmap"] {
        let figure = tag(&dom, &format!("<figure id=\"{id}\""))
            .unwrap_or_else(|| panic!("no figure `{id}`"));
        let count = |name: &str| -> u32 {
            attribute(figure, name)
                .unwrap_or_else(|| panic!("figure `{id}` was not marked rendered: {figure}"))
                .parse()
                .unwrap()
        };
        // Axes, ticks and at least a line, a curve or the cells.
        assert!(count("data-rendered") >= 5, "figure `{id}`: {figure}");
        // Tick labels, axis names and legend entries were laid out.
        assert!(count("data-text") >= 5, "figure `{id}`: {figure}");
    }
    let _ = fs::remove_dir_all(&dir);
}

/// A real replay: four policies swept over three intervals on a small
/// generated trace.
fn replay() -> ReportData {
    let topology = Topology::from_json(
        r#"{"num_layers": 3, "num_logical_experts": 16, "num_groups": 4,
            "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 5}"#,
    )
    .unwrap();
    let context = Context {
        topology: topology.clone(),
        expert_bytes: Some(44_040_192),
        link_bandwidth: Some(50e9),
    };
    let specs: Vec<PolicySpec> = ["service", "eplb", "optimal:previous", "static"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let sweep = Interval::parse_list("1,2,4").unwrap();
    let mut replay = Replay::new(context, &specs, &sweep);
    let mut trace = Generator::new(&topology, TraceShape::default());
    for window in 0..WINDOWS {
        replay.push(window, trace.next_window()).unwrap();
    }
    let (_, data) = replay.finish().unwrap();
    data
}

/// The browser to use, if any.
fn chromium() -> Option<OsString> {
    if let Some(path) = env::var_os("BALLAST_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(path);
    }
    let path = env::var_os("PATH")?;
    ["chromium", "chromium-browser"]
        .into_iter()
        .find_map(|name| {
            env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
                .map(PathBuf::into_os_string)
        })
}

/// Loads `page` in headless Chromium and returns the DOM after its scripts
/// ran. The browser runs in its own process group, so that on a timeout the
/// whole group (renderer and helpers included) can be stopped.
fn dump_dom(browser: &OsString, page: &Path, profile: &Path) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {browser:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!(
                "{browser:?} did not finish within {} s; stderr:\n{}",
                BROWSER_TIMEOUT.as_secs(),
                err.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let dom = out.join().unwrap();
    let log = err.join().unwrap_or_default();
    assert!(
        status.success(),
        "{browser:?} failed ({status}); stderr:\n{log}"
    );
    assert!(dom.contains("</html>"), "no page came back; stderr:\n{log}");
    dom
}

/// The opening tag that starts with `start` (`<figure id="x"`), up to its `>`.
fn tag<'a>(html: &'a str, start: &str) -> Option<&'a str> {
    let at = html.find(start)?;
    let end = at + html[at..].find('>')?;
    Some(&html[at..=end])
}

/// The value of attribute `name` in an opening tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..].split('"').next()?.to_owned())
}
