//! The example `examples/quick.rs` runs as written (on a shorter schedule, so the test is quick)
//! and leaves what it promises in the run folder.

#[allow(dead_code)]
#[path = "../examples/quick.rs"]
mod quick;

use stagewise_pipeline::RunDir;

#[test]
fn the_quick_example_trains_estimates_and_finds_stages() {
    let dir = std::env::temp_dir().join(format!("stagewise-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = RunDir::local(&dir);
    let found = quick::pipeline(&run, vec!["num_steps=200".into()]).unwrap();
    // The LLC table has one row per selected checkpoint, each in the run's checkpoints.
    let table = run.llc("sampler-tiny").table().unwrap().unwrap();
    let available = run.checkpoint_steps().unwrap();
    assert!(table.rows.len() >= 8, "{} rows", table.rows.len());
    for row in &table.rows {
        assert!(available.contains(&(row[0] as u64)), "{row:?}");
        assert!(row[1].is_finite());
    }
    // Stages tile the sampled steps from the first to the last.
    let first = table.rows[0][0] as u64;
    let last = table.rows[table.rows.len() - 1][0] as u64;
    assert_eq!(found.stages.first().unwrap().start, first);
    assert_eq!(found.stages.last().unwrap().end, last);
    for w in found.stages.windows(2) {
        assert_eq!(w[0].end, w[1].start);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
