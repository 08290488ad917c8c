//! A language-model checkpoint: a safetensors round trip, and the logits of the file's weights
//! recomputed from Python (numpy; torch and TransformerLens when importable).

mod common;

use stagewise_io::checkpoint::{CheckpointMeta, load_model, save_model};
use stagewise_models::language::{LanguageConfig, LanguageModel, LmWorkspace};

#[test]
fn python_recomputes_the_logits_of_a_language_model_checkpoint() {
    let cfg = LanguageConfig {
        n_layers: 2,
        d_model: 16,
        n_heads: 2,
        d_head: 8,
        n_ctx: 12,
        d_vocab: 23,
    };
    let model = LanguageModel::new(cfg.clone()).unwrap();
    let mut params: Vec<f32> = model.init_params(7);
    // Biases and LayerNorm parameters away from their init, so a wrong name or layout shows.
    for (i, x) in params.iter_mut().enumerate() {
        *x += 0.1 * ((i as f32) * 0.61).sin();
    }
    let dir = std::env::temp_dir().join(format!("stagewise-lm-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("5.safetensors");
    let meta = CheckpointMeta {
        step: 5,
        config_json: serde_json::to_string(&cfg).unwrap(),
    };
    save_model(&ckpt, &model, &params, &meta).unwrap();
    let (back, meta_back) = load_model(&ckpt, &model).unwrap();
    assert_eq!(back, params);
    assert_eq!(meta_back, meta);

    let (nseq, t) = (3, 10);
    let tokens: Vec<u32> = (0..nseq * t).map(|i| (i * 7 + i / 5) as u32 % 23).collect();
    let packed = model.pack(&params);
    let mut ws = LmWorkspace::default();
    model.forward(&params, &packed, &tokens, nseq, t, &mut ws);
    let v = cfg.d_vocab;
    let logits: Vec<Vec<Vec<f32>>> = (0..nseq)
        .map(|b| {
            (0..t)
                .map(|i| ws.logits[(b * t + i) * v..(b * t + i + 1) * v].to_vec())
                .collect()
        })
        .collect();
    let toks: Vec<Vec<u32>> = tokens.chunks(t).map(|c| c.to_vec()).collect();
    let names: Vec<&str> = model
        .layout
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let expected = serde_json::json!({
        "config": cfg, "names": names, "tokens": toks, "logits": logits,
    });
    if std::env::var_os("STAGEWISE_SKIP_PYTHON").is_some() {
        eprintln!("STAGEWISE_SKIP_PYTHON set: skipping the Python read-back");
        return;
    }
    let exp_path = dir.join("expected.json");
    std::fs::write(&exp_path, serde_json::to_string(&expected).unwrap()).unwrap();
    common::python_read_back("tests/python/check_lm_checkpoint.py", &ckpt, &exp_path);
    std::fs::remove_dir_all(&dir).unwrap();
}
