//! The heartbeat test service really dies by SIGKILL, which boot tests rely on.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

#[test]
fn heartbeat_prints_then_dies_by_sigkill() {
    let out = Command::new(env!("CARGO_BIN_EXE_heartbeat"))
        .args(["--die-after", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("heartbeat: started pid="), "{text}");
    assert_eq!(lines[1], "heartbeat: alive n=1");
}

#[test]
fn heartbeat_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_heartbeat"))
        .args(["--die-after", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
