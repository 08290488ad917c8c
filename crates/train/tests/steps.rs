//! Checkpoint step sets equal the reference's exact lists (`testdata/reference/*.csv`).

use stagewise_train::TrainConfig;

fn csv_steps(name: &str) -> (Vec<u64>, Vec<u64>) {
    let path = format!(
        "{}/../../testdata/reference/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut all = vec![];
    let mut reached = vec![];
    for line in text.lines().skip(1) {
        let (s, r) = line.split_once(',').unwrap();
        let s: u64 = s.parse().unwrap();
        all.push(s);
        if r == "True" {
            reached.push(s);
        }
    }
    (all, reached)
}

#[test]
fn paper_and_head_checkpoint_steps_match_exactly() {
    for (k, file, n_all, n_reached) in [
        (8, "checkpoint_steps_paper_K8_log100_lin100.csv", 191, 190),
        (
            16,
            "checkpoint_steps_head_K16_log100_lin10000.csv",
            10_090,
            10_089,
        ),
    ] {
        let cfg = TrainConfig::l2h4(k, 0);
        let got: Vec<u64> = cfg
            .checkpointer_config
            .checkpoint_steps
            .expand(cfg.num_steps)
            .into_iter()
            .collect();
        let (want, reached) = csv_steps(file);
        assert_eq!(got.len(), n_all);
        assert_eq!(got, want, "{file}");
        let got_reached: Vec<u64> = got.iter().copied().filter(|s| *s < cfg.num_steps).collect();
        assert_eq!(got_reached.len(), n_reached);
        assert_eq!(got_reached, reached);
    }
}
