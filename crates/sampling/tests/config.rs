//! The sampler config: both parametrisations, contradictions named, the reference's fields
//! accepted or refused with a reason.

use stagewise_sampling::chains::EvalMethod;
use stagewise_sampling::config::*;
use stagewise_sampling::sgld::{Method, SamplingMethod};

fn base() -> SamplerConfig {
    SamplerConfig {
        num_chains: 2,
        num_draws: 10,
        num_burnin_steps: 0,
        num_steps_bw_draws: 1,
        grad_batch_size: 8,
        eval_dataset_size: 1 << 20,
        epsilon: None,
        gamma: None,
        temperature: None,
        nbeta: None,
        gradient_scale: None,
        localization_scale: None,
        noise_scale: None,
        bounding_box_size: None,
        init_seed: 0,
        shared_batches: false,
        include: vec!["**".into()],
        exclude: vec![],
        sampling_method: SamplingMethod::Sgld,
        rmsprop_alpha: 0.99,
        rmsprop_eps: 0.1,
        diffusion_factor: 0.01,
        eval_method: EvalMethod::GradMinibatch,
        grad_batch_origin: GradBatchOrigin::EvalDataset,
        eval_metrics: vec!["likelihood-derived".into()],
        eval_online: false,
        num_init_loss_batches: None,
        num_evals: 5,
        cores: 1,
        device: None,
        num_burn_in: None,
        eval_batch_size: None,
        eval_loss_fn: "mse".into(),
        per_token: false,
    }
}

#[test]
fn a_minibatch_larger_than_the_data_set_is_refused() {
    let c = SamplerConfig {
        grad_batch_size: 4096,
        eval_dataset_size: 2048,
        epsilon: Some(1e-4),
        gamma: Some(100.0),
        nbeta: Some(30.0),
        ..base()
    };
    let e = c.sgld().unwrap_err().to_string();
    assert!(
        e.contains("grad_batch_size") && e.contains("eval_dataset_size = 2048"),
        "{e}"
    );
    let fits = SamplerConfig {
        grad_batch_size: 2048,
        ..c
    };
    fits.sgld().unwrap();
}

#[test]
fn both_parametrisations_give_the_papers_step() {
    let s2 = SamplerConfig {
        gradient_scale: Some(0.01),
        localization_scale: Some(0.001),
        noise_scale: Some(0.0003),
        ..base()
    };
    let g = s2.sgld().unwrap();
    assert!(
        (g.nbeta - 200.0 / 3.0).abs() < 1e-9
            && (g.gamma - 20.0 / 3.0).abs() < 1e-9
            && g.epsilon == 0.0003
    );
    // T = eps n / (2 gradient_scale) in the reference's conversion.
    let t = 0.0003 * (1u64 << 20) as f64 / 0.02;
    let s1 = SamplerConfig {
        epsilon: Some(0.0003),
        gamma: Some(20.0 / 3.0),
        temperature: Some(t),
        ..base()
    };
    assert!((s1.sgld().unwrap().nbeta - g.nbeta).abs() < 1e-9);
}

#[test]
fn contradictory_or_missing_fields_are_named() {
    let both = SamplerConfig {
        epsilon: Some(1e-3),
        noise_scale: Some(1e-3),
        ..base()
    };
    assert!(
        both.sgld()
            .unwrap_err()
            .to_string()
            .contains("both parametrisations")
    );
    let neg = SamplerConfig {
        epsilon: Some(-1e-3),
        gamma: Some(1.0),
        nbeta: Some(1.0),
        ..base()
    };
    assert_eq!(neg.sgld().unwrap_err().field, "epsilon");
    let partial = SamplerConfig {
        gradient_scale: Some(0.01),
        noise_scale: Some(1e-3),
        ..base()
    };
    assert_eq!(partial.sgld().unwrap_err().field, "localization_scale");
    assert_eq!(base().sgld().unwrap_err().field, "epsilon");
    let bad_method = SamplerConfig {
        epsilon: Some(1e-3),
        gamma: Some(1.0),
        nbeta: Some(1.0),
        rmsprop_alpha: 1.5,
        sampling_method: SamplingMethod::RmspropSgld,
        ..base()
    };
    assert_eq!(bad_method.sgld().unwrap_err().field, "rmsprop_alpha");
    assert!(
        "hmc"
            .parse::<SamplingMethod>()
            .unwrap_err()
            .contains("\"sgnht\"")
    );
    let rms = SamplerConfig {
        sampling_method: SamplingMethod::RmspropSgld,
        epsilon: Some(1e-3),
        gamma: Some(1.0),
        nbeta: Some(1.0),
        ..base()
    };
    assert_eq!(
        rms.sgld().unwrap().method,
        Method::RmsPropSgld {
            alpha: 0.99,
            eps: 0.1
        }
    );
    let twice = SamplerConfig {
        epsilon: Some(1e-3),
        gamma: Some(1.0),
        nbeta: Some(1.0),
        temperature: Some(2.0),
        ..base()
    };
    assert_eq!(twice.sgld().unwrap_err().field, "nbeta");
}

#[test]
fn reference_fields_are_accepted_or_refused_with_a_reason() {
    let scales = SamplerConfig {
        gradient_scale: Some(0.01),
        localization_scale: Some(0.001),
        noise_scale: Some(3e-4),
        ..base()
    };
    let with = |metrics: &[&str]| SamplerConfig {
        eval_metrics: metrics.iter().map(|m| m.to_string()).collect(),
        ..scales.clone()
    };
    with(&["likelihood-derived", "batch-loss", "weights"])
        .sgld()
        .unwrap();
    for (m, why) in [
        ("hessian", "not implemented"),
        ("covariance", "the reference itself refuses it"),
        ("singular-fluctuation", "not implemented"),
        ("llc", "expected some of"),
    ] {
        let e = with(&["likelihood-derived", m]).sgld().unwrap_err();
        assert_eq!(e.field, "eval_metrics");
        assert!(e.msg.contains(m) && e.msg.contains(why), "{e}");
    }
    let capped = SamplerConfig {
        num_init_loss_batches: Some(4),
        ..scales.clone()
    };
    assert_eq!(capped.sgld().unwrap_err().field, "num_init_loss_batches");
    // A minibatch larger than the data set: an error only where minibatches come from it.
    let big = SamplerConfig {
        grad_batch_size: 64,
        eval_dataset_size: 32,
        ..scales.clone()
    };
    assert_eq!(big.sgld().unwrap_err().field, "grad_batch_size");
    let fresh = SamplerConfig {
        grad_batch_origin: GradBatchOrigin::InfiniteDataset,
        ..big
    };
    fresh.sgld().unwrap();
    // The reference's names parse.
    let doc = "grad_batch_origin: infinite-dataset\neval_online: true\ncores: 1\ndevice: cpu\nnum_evals: 5\nnum_burn_in: 1000\ngradient_scale: 0.01\nlocalization_scale: 0.001\nnoise_scale: 0.0003\n";
    let c: SamplerConfig = serde_saphyr::from_str(doc).unwrap();
    // The reference ignores `num_burn_in` (not its field): no burn-in.
    assert_eq!((c.num_burn_in, c.chains().burnin), (Some(1000), 0));
    assert_eq!(c.grad_batch_origin, GradBatchOrigin::InfiniteDataset);
    assert!(serde_saphyr::from_str::<SamplerConfig>("grad_batch_origin: finite\n").is_err());
}
