//! Training behaviour: learning happens, results do not depend on the thread count, and a
//! restored state continues exactly as an uninterrupted run.

use stagewise_train::Trainer;
use stagewise_train::config::{NumTasks, TrainConfig};
use stagewise_train::steps::StepsSpec;

fn small_config() -> TrainConfig {
    let mut c = TrainConfig::l2h4(8, 3);
    c.task_config.embed_size = 32;
    c.task_config.mlp_size = 32;
    c.task_config.num_heads = 2;
    c.num_steps = 400;
    c.batch_size = 64;
    c.eval_batch_size = 256;
    c.optimizer_config.lr = 3e-3;
    c.checkpointer_config.checkpoint_steps = StepsSpec::log_linear(10, 4);
    c
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn loss_falls_below_the_zero_predictor() {
    let mut tr = Trainer::<f32>::new(small_config()).unwrap();
    let ev = tr.evaluator();
    let names = ev.metric_names();
    assert_eq!(names.len(), 2 + 7 * 9);
    let mse_idx = names.iter().position(|n| n == "pretrain/mse").unwrap();
    let before = tr.evaluate(&ev, 0).unwrap()[mse_idx];
    for _ in 0..400 {
        tr.step().unwrap();
    }
    let after = tr.evaluate(&ev, 399).unwrap();
    // Zero prediction costs D + sigma^2 = 4.125; a model that learned the in-context mean task
    // structure does clearly better within a few hundred steps.
    assert!(before > 3.0, "initial mse {before}");
    assert!(after[mse_idx] < 3.0, "final mse {}", after[mse_idx]);
    // The ridge baseline's own error is the Bayes risk; delta_ridge == delta_dmmse for M = inf.
    let dr = names
        .iter()
        .position(|n| n == "pretrain/delta_ridge")
        .unwrap();
    let dm = names
        .iter()
        .position(|n| n == "pretrain/delta_dmmse")
        .unwrap();
    assert_eq!(after[dr], after[dm]);
    let sub = names
        .iter()
        .position(|n| n == "pretrain/mse_subseq")
        .unwrap();
    assert_eq!(after[sub], after[mse_idx]);
}

#[test]
fn thread_count_does_not_change_a_single_bit() {
    let run = |threads| {
        pool(threads).install(|| {
            let mut tr = Trainer::<f32>::new(small_config()).unwrap();
            for _ in 0..20 {
                tr.step().unwrap();
            }
            tr.state().unwrap().params
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn restored_state_continues_bit_for_bit() {
    let mut full = Trainer::<f32>::new(small_config()).unwrap();
    let mut losses = vec![];
    for _ in 0..30 {
        losses.push(full.step().unwrap());
    }
    let mut first = Trainer::<f32>::new(small_config()).unwrap();
    for _ in 0..12 {
        first.step().unwrap();
    }
    let saved = first.state().unwrap();
    drop(first);
    let mut resumed = Trainer::<f32>::new(small_config()).unwrap();
    resumed.restore(saved).unwrap();
    for want in &losses[12..] {
        assert_eq!(resumed.step().unwrap(), *want);
    }
    assert_eq!(resumed.state().unwrap(), full.state().unwrap());
}

#[test]
fn discrete_tasks_use_dmmse_and_differ_from_ridge() {
    let mut c = small_config();
    c.task_config.num_tasks = NumTasks::Finite(4);
    c.task_config.pretrain_seed = Some(5);
    let mut tr = Trainer::<f32>::new(c).unwrap();
    let ev = tr.evaluator();
    let names = ev.metric_names();
    let v = tr.evaluate(&ev, 0).unwrap();
    let dr = names
        .iter()
        .position(|n| n == "pretrain/delta_ridge")
        .unwrap();
    let dm = names
        .iter()
        .position(|n| n == "pretrain/delta_dmmse")
        .unwrap();
    assert_ne!(v[dr], v[dm]);
}

#[test]
fn invalid_configs_name_the_field() {
    let mut c = small_config();
    c.task_config.num_heads = 3;
    let e = Trainer::<f32>::new(c).err().unwrap().to_string();
    assert!(
        e.contains("task_config.num_heads") && e.contains("divide"),
        "{e}"
    );
    let mut c = small_config();
    c.optimizer_config.lr = -1.0;
    let e = Trainer::<f32>::new(c).err().unwrap().to_string();
    assert!(e.contains("optimizer_config.lr"), "{e}");
}
