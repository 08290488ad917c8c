//! A sparse parity checkpoint: a safetensors round trip, and its logits recomputed from Python
//! (numpy; the reference's `MLP` in torch with `strict=True` when torch imports).

mod common;

use stagewise_io::checkpoint::{CheckpointMeta, load_model, save_model};
use stagewise_models::parity::{ParityConfig, ParityMlp};

#[test]
fn python_recomputes_the_logits_of_a_parity_checkpoint() {
    let model = ParityMlp::new(ParityConfig {
        num_tasks: 4,
        num_features: 7,
        hidden_dim: 9,
    })
    .unwrap();
    let params: Vec<f32> = model.init_params(3);
    let dir = std::env::temp_dir().join(format!("stagewise-parity-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("12.safetensors");
    let meta = CheckpointMeta {
        step: 12,
        config_json: "{}".into(),
    };
    save_model(&ckpt, &model, &params, &meta).unwrap();
    let (back, _) = load_model(&ckpt, &model).unwrap();
    assert_eq!(back, params);
    // Inputs: one-hot control bits, then bits of the sample index.
    let b = 12;
    let x: Vec<f32> = (0..b)
        .flat_map(|s| {
            let control = (0..4).map(move |t| f32::from(t == s % 4));
            let bits = (0..7).map(move |i| ((s * 5 + 3) >> i & 1) as f32);
            control.chain(bits)
        })
        .collect();
    let logits = model.logits(&params, &x, b);
    let shapes: serde_json::Map<String, serde_json::Value> = model
        .layout
        .params
        .iter()
        .map(|p| (p.name.clone(), serde_json::json!(p.shape)))
        .collect();
    let expected = serde_json::json!({
        "shapes": shapes,
        "inputs": x.chunks(11).collect::<Vec<_>>(),
        "logits": logits.chunks(2).collect::<Vec<_>>(),
    });
    if std::env::var_os("STAGEWISE_SKIP_PYTHON").is_some() {
        eprintln!("STAGEWISE_SKIP_PYTHON set: skipping the Python read-back");
        return;
    }
    let exp_path = dir.join("expected.json");
    std::fs::write(&exp_path, serde_json::to_string(&expected).unwrap()).unwrap();
    common::python_read_back("tests/python/check_parity_checkpoint.py", &ckpt, &exp_path);
    std::fs::remove_dir_all(&dir).unwrap();
}
