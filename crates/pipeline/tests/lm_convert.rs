//! `scripts/convert_lm_checkpoints.py` on checkpoints that PyTorch writes as the reference does:
//! the run folder it makes loads here, and its weights give PyTorch's logits.

use std::path::Path;
use std::process::Command;

use stagewise_models::language::{LanguageModel, LmWorkspace};
use stagewise_pipeline::RunDir;
use stagewise_pipeline::lm::load_lm_config;

#[test]
fn converted_reference_checkpoints_give_pytorchs_logits() {
    if std::env::var_os("STAGEWISE_SKIP_PYTHON").is_some() {
        eprintln!("STAGEWISE_SKIP_PYTHON set: skipping");
        return;
    }
    let dir = std::env::temp_dir().join(format!("stagewise-lm-convert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let cfg =
        r#"{"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "n_ctx": 10, "d_vocab": 19}"#;
    let made = Command::new(&python)
        .current_dir(&root)
        .args([
            "tests/python/make_lm_pt.py",
            dir.join("pt").to_str().unwrap(),
            cfg,
        ])
        .output()
        .unwrap();
    if made.status.code() == Some(3) {
        eprintln!("torch is not importable: skipping (PYTHON= a Python with torch runs it)");
        return;
    }
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let run_dir = dir.join("run");
    let out = Command::new(&python)
        .current_dir(&root)
        .args([
            "scripts/convert_lm_checkpoints.py",
            dir.join("pt").to_str().unwrap(),
        ])
        .args(["--out", run_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("OK: 2 checkpoints"),
        "{text}"
    );

    let run = RunDir::local(&run_dir);
    assert!(run.is_language_run());
    let yaml = std::fs::read_to_string(run_dir.join("config.yaml")).unwrap();
    let (config, _) = load_lm_config(&yaml, "config.yaml", &[], None).unwrap();
    let model = LanguageModel::new(config.transformer_config.model()).unwrap();
    assert_eq!(run.checkpoint_steps().unwrap(), [0, 250]);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pt/expected.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = expected["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
        })
        .collect();
    for step in [0u64, 250] {
        let w = run.weights(&model, step).unwrap();
        let mut ws = LmWorkspace::default();
        model.forward(&w, &model.pack(&w), &tokens, 2, 10, &mut ws);
        let want: Vec<f64> = expected["logits"][step.to_string()]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter())
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect();
        let worst = ws.logits[..want.len()]
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "step {step}: logits differ by {worst}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
