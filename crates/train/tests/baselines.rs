//! Ridge and dMMSE against the reference's float64 golden vectors (reference.md 13).

use serde_json::Value;
use stagewise_train::baselines::{dmmse, ridge};

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        _ => vec![v.as_f64().unwrap()],
    }
}

#[test]
fn ridge_and_dmmse_match_golden_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/reference/golden_vectors.json"
    );
    let g: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let b = &g["baselines"];
    let (xs, ys) = (flat(&b["xs"]), flat(&b["ys"]));
    let s2 = b["noise_variance"].as_f64().unwrap();
    let close = |got: &[f64], want: Vec<f64>, what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                "{what}: {got:?} vs {want:?}"
            );
        }
    };
    let (w, y) = ridge(&xs, &ys, 1, 4, 2, s2);
    close(&w, flat(&b["ridge_ws_hat"]), "ridge w");
    close(&y, flat(&b["ridge_ys_pred"]), "ridge y");
    let (w, y) = dmmse(&xs, &ys, 1, 4, 2, s2, &flat(&b["dmmse_tasks"]));
    close(&w, flat(&b["dmmse_ws_hat"]), "dmmse w");
    close(&y, flat(&b["dmmse_ys_pred"]), "dmmse y");
}
