//! The `selftest` command end to end: JSON on stdout, exit status by targets.

use std::process::Command;

fn selftest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ballast-worker"))
        .arg("selftest")
        .args(args)
        .output()
        .expect("run ballast-worker")
}

#[test]
fn json_report_passes_on_a_small_problem() {
    let out = selftest(&["--json", "--tokens", "8", "--features", "128"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["pass"], true);
    assert_eq!(report["config"]["k"], 4096);
    for figure in [
        "fine_grained_rel_err",
        "promotion_added_err",
        "limited_accum_over_promoted",
        "outlier_tile_rel_err",
        "outlier_tensor_rel_err",
    ] {
        assert!(
            report[figure].as_f64().is_some_and(f64::is_finite),
            "{figure}"
        );
    }
}

#[test]
fn a_missed_target_exits_non_zero() {
    // With 3 accumulator bits the emulated tensor core is far too coarse.
    let out = selftest(&[
        "--tokens",
        "8",
        "--features",
        "128",
        "--k",
        "512",
        "--fraction-bits",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISSED"));
}

#[test]
fn bad_shapes_fail_with_a_message() {
    let out = selftest(&["--features", "100"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 128"));
}
