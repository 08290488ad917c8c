//! Multitask sparse parity: the data against brute force and its stated laws, the MLP's
//! parameter count, names and gradients, runs stepped together equal to the same runs alone,
//! and tasks learned in order of their frequency.

use stagewise_models::parity::{ParityConfig, ParityMlp, ParityWorkspace};
use stagewise_train::parity::{ParityRun, ParityRuns, ParityTrainConfig, SparseParity};

#[test]
fn the_mlp_has_the_reference_names_and_count() {
    let m = ParityMlp::new(ParityConfig {
        num_tasks: 8,
        num_features: 16,
        hidden_dim: 50,
    })
    .unwrap();
    assert_eq!(m.num_params(), 1352);
    let names: Vec<(String, Vec<usize>)> = m
        .layout
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("fc1.weight".to_string(), vec![50, 24]),
            ("fc1.bias".into(), vec![50]),
            ("fc2.weight".into(), vec![2, 50]),
            ("fc2.bias".into(), vec![2]),
        ]
    );
    assert!(
        ParityMlp::new(ParityConfig {
            num_tasks: 0,
            num_features: 16,
            hidden_dim: 50
        })
        .is_err()
    );
}

#[test]
fn labels_are_the_parity_of_the_task_bits_by_brute_force() {
    let d = SparseParity::new(5, 3, 4, 1.0, 7);
    for task in &d.tasks {
        let mut sorted = task.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "{task:?}");
        assert!(task.iter().all(|&i| i < 5));
    }
    // Every bit pattern of 5 bits, every task: XOR of the chosen bits.
    for t in 0..4 {
        for pattern in 0u32..32 {
            let bits: Vec<u8> = (0..5).map(|i| ((pattern >> i) & 1) as u8).collect();
            let xor = d.tasks[t].iter().fold(0u8, |a, &i| a ^ bits[i]);
            assert_eq!(d.label(t, &bits), xor);
        }
    }
    // Samples: one-hot control bits, then bits whose parity over the task is the label.
    let (x, y) = d.train_batch::<f64>(500, 3);
    let mut seen = [false; 32];
    for (row, label) in x.chunks_exact(9).zip(&y) {
        let control: Vec<usize> = (0..4).filter(|&i| row[i] == 1.0).collect();
        assert_eq!(control.len(), 1);
        assert!(row[..4].iter().all(|v| *v == 0.0 || *v == 1.0));
        let bits: Vec<u8> = row[4..].iter().map(|v| *v as u8).collect();
        assert!(row[4..].iter().all(|v| *v == 0.0 || *v == 1.0));
        let xor = d.tasks[control[0]].iter().fold(0u8, |a, &i| a ^ bits[i]);
        assert_eq!(*label, xor);
        seen[bits
            .iter()
            .enumerate()
            .map(|(i, b)| (*b as usize) << i)
            .sum::<usize>()] = true;
    }
    assert!(
        seen.iter().all(|s| *s),
        "500 samples cover all 32 bit patterns"
    );
    // An evaluation set holds its own task only, and is the same every time.
    let (ex, _) = d.eval_set::<f64>(64, 2);
    assert!(ex.chunks_exact(9).all(|r| r[2] == 1.0));
    assert_eq!(d.eval_set::<f64>(64, 2), d.eval_set::<f64>(64, 2));
}

#[test]
fn tasks_are_drawn_with_zipf_frequencies() {
    let alpha = 1.5;
    let d = SparseParity::new(16, 3, 5, alpha, 3);
    let z: f64 = (1..=5).map(|i| (i as f64).powf(-alpha)).sum();
    for (t, p) in d.frequencies.iter().enumerate() {
        assert!((p - ((t + 1) as f64).powf(-alpha) / z).abs() < 1e-15);
    }
    let n = 40_000;
    let (x, _) = d.train_batch::<f32>(n, 0);
    let mut counts = [0usize; 5];
    for row in x.chunks_exact(21) {
        counts[(0..5).position(|i| row[i] == 1.0).unwrap()] += 1;
    }
    for (t, c) in counts.iter().enumerate() {
        let p = d.frequencies[t];
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (*c as f64 - n as f64 * p).abs() < 4.0 * sd,
            "task {t}: {c} of {n}, expected {}",
            n as f64 * p
        );
    }
}

#[test]
fn checkpoint_steps_are_numpy_linspace_as_int() {
    let c = ParityTrainConfig {
        num_steps: 10,
        num_checkpoints: Some(4),
        ..Default::default()
    };
    assert_eq!(c.checkpoint_steps(), [0, 3, 6, 10]);
    let d = ParityTrainConfig::default();
    assert_eq!(d.num_checkpoints(), 1000);
    let sweep = ParityTrainConfig {
        num_steps: 10_000,
        num_checkpoints: Some(1000),
        ..Default::default()
    };
    let s = sweep.checkpoint_steps();
    assert_eq!((s.len(), s[1], s[999]), (1000, 10, 10_000));
    let bad = ParityTrainConfig {
        num_task_bits: 17,
        ..Default::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("num_task_bits") && e.contains("17"), "{e}");
}

#[test]
fn gradient_matches_finite_differences() {
    let m = ParityMlp::new(ParityConfig {
        num_tasks: 3,
        num_features: 6,
        hidden_dim: 7,
    })
    .unwrap();
    let d = SparseParity::new(6, 2, 3, 0.5, 1);
    let (x, y) = d.train_batch::<f64>(40, 0);
    let mut p: Vec<f64> = m.init_params(4);
    let mut ws = ParityWorkspace::default();
    let mut g = vec![0.0; p.len()];
    m.loss(&p, &x, &y, &mut ws, Some(&mut g));
    let h = 1e-6;
    for i in 0..p.len() {
        let old = p[i];
        p[i] = old + h;
        let up = m.loss(&p, &x, &y, &mut ws, None);
        p[i] = old - h;
        let down = m.loss(&p, &x, &y, &mut ws, None);
        p[i] = old;
        let fd = (up - down) / (2.0 * h);
        assert!(
            (fd - g[i]).abs() < 1e-7 * (1.0 + fd.abs()),
            "parameter {i}: fd {fd} vs {}",
            g[i]
        );
    }
}

fn small(seed: u64, alpha: f64) -> ParityTrainConfig {
    ParityTrainConfig {
        num_tasks: 4,
        num_features: 10,
        num_task_bits: 3,
        hidden_dim: 32,
        batch_size: 256,
        eval_batch_size: 128,
        num_steps: 30,
        alpha,
        seed,
        ..Default::default()
    }
}

#[test]
fn runs_stepped_together_equal_the_same_runs_alone() {
    let configs = [small(0, 0.5), small(1, 2.0), small(2, 1.0)];
    let together = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut runs = ParityRuns::<f32>::new(&configs).unwrap();
            for _ in 0..31 {
                runs.train_step();
            }
            // Past num_steps = 30 nothing moves.
            assert!(runs.train_step().iter().all(|l| l.is_nan()));
            runs.runs.into_iter().map(|r| r.params).collect::<Vec<_>>()
        })
    };
    let batched = together(2);
    assert_eq!(batched, together(1));
    for (c, p) in configs.iter().zip(&batched) {
        let alone = ParityRuns::<f32>::new(std::slice::from_ref(c)).unwrap();
        let mut run = alone.runs.into_iter().next().unwrap();
        for _ in 0..31 {
            run.train_step(&alone.model);
        }
        assert_eq!(&run.params, p);
    }
    // Different shapes cannot share a step.
    let mut other = small(0, 0.5);
    other.hidden_dim = 16;
    let e = ParityRuns::<f32>::new(&[small(0, 0.5), other])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hidden_dim"), "{e}");
}

/// The property of the reference's figure: frequent tasks are learned first.
#[test]
fn tasks_are_learned_in_order_of_frequency() {
    let c = ParityTrainConfig {
        num_tasks: 4,
        num_features: 16,
        num_task_bits: 3,
        hidden_dim: 64,
        batch_size: 512,
        eval_batch_size: 256,
        num_steps: 6000,
        alpha: 2.0,
        lr: 0.003,
        seed: 0,
        ..Default::default()
    };
    let mut runs = ParityRuns::<f32>::new(std::slice::from_ref(&c)).unwrap();
    let model = runs.model.clone();
    let run: &mut ParityRun<f32> = &mut runs.runs[0];
    let mut learned = [None::<u64>; 4];
    while run.step <= c.num_steps {
        run.train_step(&model);
        if run.step % 25 == 0 {
            let e = run.evaluate(&model, None);
            for (t, a) in e.task_accuracy.iter().enumerate() {
                if learned[t].is_none() && *a >= 0.95 {
                    learned[t] = Some(run.step);
                }
            }
        }
    }
    eprintln!(
        "tasks {:?}: first step at 95 % accuracy {learned:?}",
        run.data.tasks
    );
    let at: Vec<u64> = learned
        .iter()
        .map(|s| s.expect("every task is learned"))
        .collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    assert!(at[0] < at[3], "{at:?}");
}
