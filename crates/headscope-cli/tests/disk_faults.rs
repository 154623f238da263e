//! A `detect` sweep whose output folder fills up (a small tmpfs) or is read-only: a clear error naming the
//! problem and exit status 1, never a panic; every record already written stays readable, and the same
//! command rerun where there is room resumes to exactly an uninterrupted run's records.
//!
//! Mounting needs root (or a user namespace); where the mount is refused the tests say so and skip.

mod common;

use common::fault_sweep::{records, FaultSweep};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn headscope(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headscope")).args(args).output().unwrap()
}

/// A tmpfs of `bytes` at `at` (mode `ro` or `rw`), unmounted on drop; `None` where mounting is not allowed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: usize) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root); the disk-fault tests did not run");
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.0).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_full_disk_stops_the_sweep_with_a_clear_error_and_loses_nothing() {
    let s = FaultSweep::new();
    let reference = s.root.join("reference");
    let done = headscope(&s.args(&reference));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let want = records(&reference);
    // Room for run.json and head_scores.json (a 4 KiB page each) and about half of the records.
    let records_bytes = std::fs::metadata(reference.join("tests.jsonl")).unwrap().len() as usize;
    let room = 2 * 4096 + (records_bytes / 2).next_multiple_of(4096);
    let Some(disk) = Tmpfs::mount(&s.root.join("small"), room) else { return };
    let out = disk.0.join("run");
    let failed = headscope(&s.args(&out));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device") && stderr.contains(&*out.to_string_lossy()), "no clear error: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // What was written is whole: a prefix of the uninterrupted run's records.
    let kept = records(&out);
    assert!(!kept.is_empty() && kept.len() < want.len(), "{} of {} records", kept.len(), want.len());
    assert_eq!(kept[..], want[..kept.len()]);
    // Moved to a disk with room, the same command resumes to the uninterrupted result.
    let moved = s.root.join("moved");
    copy_folder(&out, &moved);
    let resumed = headscope(&s.args(&moved));
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(records(&moved), want);
    let scores = |d: &Path| std::fs::read(d.join("head_scores.json")).unwrap();
    assert_eq!(scores(&moved), scores(&reference), "head_scores.json byte for byte");
}

#[test]
fn a_read_only_output_folder_is_refused_by_name_and_left_as_it_was() {
    let s = FaultSweep::new();
    let Some(disk) = Tmpfs::mount(&s.root.join("ro"), 1 << 20) else { return };
    // A run stopped half-way (its first records), then the folder made read-only.
    let out = disk.0.join("run");
    let full = s.root.join("full");
    assert!(headscope(&s.args(&full)).status.success());
    std::fs::create_dir_all(&out).unwrap();
    for name in ["run.json", "tests.jsonl"] {
        let text = std::fs::read_to_string(full.join(name)).unwrap();
        let text = if name == "tests.jsonl" { text.lines().take(5).map(|l| format!("{l}\n")).collect() } else { text };
        std::fs::write(out.join(name), text).unwrap();
    }
    let before: Vec<(String, Vec<u8>)> =
        ["run.json", "tests.jsonl"].iter().map(|n| (n.to_string(), std::fs::read(out.join(n)).unwrap())).collect();
    disk.remount("ro");
    for target in [out.clone(), disk.0.join("new")] {
        let failed = headscope(&s.args(&target));
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert_eq!(failed.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("Read-only file system") && stderr.contains(&*disk.0.to_string_lossy()), "no clear error: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    for (name, bytes) in before {
        assert_eq!(std::fs::read(out.join(&name)).unwrap(), bytes, "{name} changed");
    }
    disk.remount("rw");
}
