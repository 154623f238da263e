//! Helpers of the CLI's end-to-end tests: run the built `headscope`, and require success or a clean
//! failure (exit code 1, an `error:` line naming the problem, no panic).
#![allow(dead_code)] // each test file uses its own subset

use std::process::{Command, Output};

pub fn headscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headscope")).args(args).output().expect("the binary runs")
}

/// Runs a command that must succeed; returns its stdout and stderr.
pub fn ok(args: &[&str]) -> (String, String) {
    let out = headscope(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "headscope {args:?} failed\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

/// [`ok`]'s stdout.
pub fn ok_stdout(args: &[&str]) -> String {
    ok(args).0
}

/// Runs a command that must fail cleanly with an error naming `expect`.
pub fn fails(args: &[&str], expect: &str) {
    fails_all(args, &[expect]);
}

/// Runs a command that must fail cleanly with an error naming every one of `expect`.
pub fn fails_all(args: &[&str], expect: &[&str]) {
    let out = headscope(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "headscope {args:?} should fail with 1; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for e in expect {
        assert!(stderr.contains("error:") && stderr.contains(e), "headscope {args:?}: expected `{e}` in: {stderr}");
    }
}
pub mod fault_sweep;
