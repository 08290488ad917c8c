//! Running a Python read-back script of the tests.

use std::path::Path;
use std::process::Command;

/// Runs `python3 SCRIPT CHECKPOINT EXPECTED` (`PYTHON` overrides the interpreter) from the
/// repository root and asserts that it succeeds and prints `OK:`; returns what it printed.
pub fn python_read_back(script: &str, checkpoint: &Path, expected: &Path) -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(&python)
        .current_dir(&root)
        .args([
            script,
            checkpoint.to_str().unwrap(),
            expected.to_str().unwrap(),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e} (set PYTHON, or STAGEWISE_SKIP_PYTHON=1)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("OK:"),
        "{text}\n(the read-back needs `pip install safetensors numpy`; .ci/run installs them)"
    );
    eprintln!("{text}");
    text
}
