//! Bad pipeline files (`fixtures/bad-config/*.toml`): each is refused with exit status 1 and an
//! error that names the file and the key, before any stage runs. Each file states what it
//! expects in its header: `# expect-key: KEY`, `# expect: TEXT` (any number) and optionally
//! `# not-created: PATH` (an output the refused run must not have made).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_coretech");

struct Expect {
    key: String,
    texts: Vec<String>,
    not_created: Vec<String>,
}

fn header(text: &str) -> Expect {
    let mut e = Expect { key: String::new(), texts: Vec::new(), not_created: Vec::new() };
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(k) = line.strip_prefix("# expect-key: ") {
            e.key = k.to_string();
        } else if let Some(t) = line.strip_prefix("# expect: ") {
            e.texts.push(t.to_string());
        } else if let Some(p) = line.strip_prefix("# not-created: ") {
            e.not_created.push(p.to_string());
        }
    }
    e
}

#[test]
fn every_bad_config_is_refused_naming_file_and_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("fixtures/bad-config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "{} bad configs", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let expect = header(&std::fs::read_to_string(path).unwrap());
        assert!(!expect.key.is_empty() && !expect.texts.is_empty(), "{rel}: no `# expect-key:` / `# expect:` header");
        for p in &expect.not_created {
            let _ = std::fs::remove_dir_all(root.join(p));
        }
        let out = Command::new(BIN).current_dir(root).args(["run", &rel]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
        let mut wrong = Vec::new();
        if out.status.code() != Some(1) {
            wrong.push(format!("exit status {:?}", out.status));
        }
        if !error.contains(&format!("config {rel}: {}", expect.key)) {
            wrong.push(format!("does not start with `config {rel}: {}`", expect.key));
        }
        for t in &expect.texts {
            if !error.contains(t.as_str()) {
                wrong.push(format!("lacks {t:?}"));
            }
        }
        for p in &expect.not_created {
            if root.join(p).exists() {
                wrong.push(format!("{p} was created: a stage ran"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{rel}: {}\n  stderr: {}", wrong.join("; "), stderr.trim()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_single_stage_command_on_a_file_without_its_section_names_file_and_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN).current_dir(root).args(["pack", "pipelines/cpt.toml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config pipelines/cpt.toml: pack: stage \"pack\" needs a [pack] section"), "{stderr}");
}
