//! Susceptibility and BIF chains on the device (every restriction's chains in one batch) against
//! the CPU's `sample_observed`, and a restriction batched against the same restriction alone.

use std::sync::atomic::Ordering;

use stagewise_cuda::observed::{WINDOW_BYTES, sample_observed as device_observed};
use stagewise_sampling::observed::{ObserveConfig, ObservedRestriction, sample_observed};
use stagewise_sampling::regression::Observed;
use stagewise_sampling::sgld::Method;

use crate::common::*;

/// Observed sequences: 7, so that the device runs chunks of 5 (the minibatch) and of 2.
const NSEQ: usize = 7;

struct Setup {
    model: RegressionTransformer,
    dist: SequenceDistribution,
    w0: Vec<f32>,
    batch: Batch<f32>,
    masks: Vec<Option<Vec<bool>>>,
}

fn setup() -> Setup {
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let dist = cfg.pretrain_distribution();
    let w0: Vec<f32> = model.init_params(3);
    let mut batch = Batch::<f32>::default();
    dist.sample_into(&mut batch, NSEQ, 5, tag::OBSERVABLES, 0);
    let p = model.num_params();
    // The full chains, one half of the weights, every third weight: different counts (SGNHT's
    // thermostat averages over each set's own).
    let masks = vec![
        None,
        Some((0..p).map(|i| i < p / 2).collect()),
        Some((0..p).map(|i| i % 3 == 0).collect()),
    ];
    Setup {
        model,
        dist,
        w0,
        batch,
        masks,
    }
}

fn observed<'m>(s: &'m Setup) -> Observed<'m, f32> {
    Observed {
        model: &s.model,
        toks: s.batch.toks.clone(),
        ys: s.batch.ys.clone(),
        nseq: NSEQ,
        k: s.dist.k,
    }
}

fn spec(s: &Setup) -> DatasetSpec {
    DatasetSpec {
        dist: s.dist.clone(),
        n: 100,
        batch: 5,
        seed: 8,
        infinite: false,
    }
}

fn chain_cfg() -> ChainConfig {
    let mut c = ChainConfig::new(2, 5, 77);
    c.burnin = 1;
    c.first_chain = 1;
    c
}

/// The setup's scan on `dev` under `masks`.
fn on_device(
    dev: &Arc<dyn Device>,
    s: &Setup,
    sgld: &Sgld,
    masks: &[Option<Vec<bool>>],
) -> Result<Vec<ObservedRestriction>, stagewise_cuda::GpuError> {
    let set = observed(s);
    let (cfg, ocfg) = (chain_cfg(), ocfg(s));
    device_observed(
        dev,
        &s.model,
        &spec(s),
        &set,
        &s.w0,
        sgld,
        masks,
        &cfg,
        &ocfg,
        &|_| {},
    )
}

fn ocfg(s: &Setup) -> ObserveConfig {
    ObserveConfig {
        full: true,
        chain_mean: true,
        store_draws: true,
        ..ObserveConfig::new(0..NSEQ * s.dist.k)
    }
}

fn close(a: f64, b: f64, rel: f64, what: &str) {
    assert!(
        (a - b).abs() <= rel * b.abs() + 1e-6,
        "{what}: device {a} vs cpu {b}"
    );
}

/// The device's chains against the CPU's, values within `rel` of each other: two float32
/// implementations that sum in different orders, so the chains part by rounding that the
/// sampler's steps carry forward.
fn assert_follows(got: &[ObservedRestriction], want: &[ObservedRestriction], rel: f64, what: &str) {
    let close = |a: f64, b: f64, what: &str| close(a, b, rel, what);
    assert_eq!(got.len(), want.len());
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.chains.len(), w.chains.len());
        for (c, (gc, wc)) in g.chains.iter().zip(&w.chains).enumerate() {
            let at = format!("{what}, restriction {r}, chain {c}");
            assert!(
                gc.finished() && wc.finished(),
                "{at}: {:?}",
                gc.trace.failure
            );
            assert_eq!(gc.draws.len(), 5, "{at}");
            assert_eq!(gc.moments.n, wc.moments.n, "{at}");
            for (d, (gd, wd)) in gc.draws.iter().zip(&wc.draws).enumerate() {
                for (i, (a, b)) in gd.iter().zip(wd).enumerate() {
                    close(*a, *b, &format!("{at}, draw {d}, value {i}"));
                }
            }
            for (d, (a, b)) in gc.driver.iter().zip(&wc.driver).enumerate() {
                close(*a, *b, &format!("{at}, driver at draw {d}"));
            }
            for (a, b) in gc.trace.losses.iter().zip(&wc.trace.losses) {
                close(*a, *b, &format!("{at}, trace loss"));
            }
            // MALA's acceptance (plain SGLD only) sums over each set's own coordinates.
            for (a, b) in gc.trace.mala.iter().zip(&wc.trace.mala) {
                if b.is_finite() {
                    let (a, b) = (a.ln(), b.ln());
                    assert!(
                        (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                        "{at}: log acceptance {a} vs cpu {b}"
                    );
                }
            }
        }
        let (gm, wm) = (
            g.chain_mean.as_ref().unwrap(),
            w.chain_mean.as_ref().unwrap(),
        );
        assert_eq!(gm.n, wm.n);
        for (a, b) in gm.mean_x.iter().zip(&wm.mean_x) {
            close(*a, *b, &format!("{what}, restriction {r}, chain mean"));
        }
    }
}

#[test]
fn restrictions_batched_on_the_device_follow_the_cpu() {
    let s = setup();
    let set = observed(&s);
    let potential = Dataset::<f32>::new(&s.model, s.dist.clone(), 100, 5, 8);
    let (cfg, ocfg) = (chain_cfg(), ocfg(&s));
    let dev = emulator();
    // SGNHT runs at 10 times SGLD's step, which carries rounding further: one observable at its
    // last draw moved 1.5e-3 from the CPU's with the CPU's residual sums in one order and 3.7e-3
    // in another (2026-12-07), all others within 1e-4; a wrong update moves them by far more.
    for (what, rel, sgld) in [
        (
            "sgld",
            2e-3,
            Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0),
        ),
        (
            "sgnht",
            1e-2,
            Sgld {
                method: Method::Sgnht {
                    diffusion_factor: 0.01,
                },
                ..Sgld::from_temperature(1e-3, 100.0, 1.0, 200.0)
            },
        ),
    ] {
        let want = sample_observed(
            &potential,
            &set,
            &s.w0,
            &sgld,
            &s.masks,
            &cfg,
            &ocfg,
            &|_| {},
        );
        let got = on_device(&dev, &s, &sgld, &s.masks).unwrap();
        assert_follows(&got, &want, rel, what);
        // The restricted chains moved only their own weights: they differ from the full ones.
        let (full, half) = (&got[0].chains[0].draws, &got[1].chains[0].draws);
        assert_ne!(full.last(), half.last(), "{what}");
    }
}

#[test]
fn a_restriction_batched_equals_it_alone_on_the_device() {
    let s = setup();
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let dev = emulator();
    let run = |masks: &[Option<Vec<bool>>]| on_device(&dev, &s, &sgld, masks).unwrap();
    // The batch folds its draws in windows of two draws (three downloads), the lone run in one.
    let before = WINDOW_BYTES.load(Ordering::Relaxed);
    WINDOW_BYTES.store(2 * 3 * 2 * NSEQ * s.dist.k * 4, Ordering::Relaxed);
    let batched = run(&s.masks);
    WINDOW_BYTES.store(before, Ordering::Relaxed);
    let alone = run(&s.masks[2..]);
    let (b, a) = (&batched[2], &alone[0]);
    for (bc, ac) in b.chains.iter().zip(&a.chains) {
        assert!(bc.finished());
        assert_eq!(bc.draws, ac.draws);
        assert_eq!(bc.driver, ac.driver);
        assert_eq!(bc.moments.mean_x, ac.moments.mean_x);
        assert_eq!(bc.moments.c_xx, ac.moments.c_xx);
        assert_eq!(bc.trace, ac.trace);
    }
    assert_eq!(
        b.chain_mean.as_ref().unwrap().c_xx,
        a.chain_mean.as_ref().unwrap().c_xx
    );
}

/// The counted peak of a batched scan is exactly the smallest card it runs on, and
/// `check_fits` refuses one granule less before allocating anything, naming the scan.
#[test]
fn the_observed_scan_fits_exactly_the_counted_peak() {
    use stagewise_cuda::observed::check_fits;
    use stagewise_cuda::tally::peak_bytes;
    let s = setup();
    let (set, cfg) = (observed(&s), chain_cfg());
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let run = |dev: &Arc<dyn Device>| on_device(dev, &s, &sgld, &s.masks);
    let peak = peak_bytes(run).unwrap();
    let fits: Arc<dyn Device> = Arc::new(HostDevice::with_memory_limit(peak));
    check_fits(&fits, &s.model, &spec(&s), &set, &sgld, &s.masks, &cfg).unwrap();
    run(&fits).unwrap_or_else(|e| panic!("{peak} bytes should fit: {e}"));
    let small: Arc<dyn Device> = Arc::new(HostDevice::with_memory_limit(peak - 256));
    let err = check_fits(&small, &s.model, &spec(&s), &set, &sgld, &s.masks, &cfg)
        .expect_err("one granule short")
        .to_string();
    assert!(
        err.contains("3 restrictions x 2 chains (grad_batch_size = 5, 7 observed sequences, num_draws = 5) needs"),
        "{err}"
    );
    assert_eq!(
        small.memory(),
        Some((peak - 256, peak - 256)),
        "check_fits allocated"
    );
    match run(&small) {
        Err(e) if e.to_string().contains("out of memory") => {}
        other => panic!("{} bytes should not fit: {:?}", peak - 256, other.err()),
    }
}
