//! The language model: parameter counts, TransformerLens names, finite-difference gradients,
//! and batch splitting that changes nothing.

use stagewise_models::language::{LanguageConfig, LanguageModel, LmRunner};

fn tiny(d_head: usize, n_ctx: usize) -> LanguageModel {
    LanguageModel::new(LanguageConfig {
        n_layers: 2,
        d_model: 12,
        n_heads: 2,
        d_head,
        n_ctx,
        d_vocab: 11,
    })
    .unwrap()
}

fn tokens(n: usize, vocab: u32, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt) >> 7) % vocab)
        .collect()
}

#[test]
fn parameter_counts_and_names_are_transformer_lens() {
    let m = LanguageModel::new(LanguageConfig::reference()).unwrap();
    assert_eq!(m.num_params(), 3_355_016);
    let one = LanguageConfig {
        n_layers: 1,
        ..LanguageConfig::reference()
    };
    assert_eq!(LanguageModel::new(one).unwrap().num_params(), 3_091_336);
    let names: Vec<&str> = m.layout.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        &names[..12],
        [
            "embed.W_E",
            "pos_embed.W_pos",
            "blocks.0.ln1.w",
            "blocks.0.ln1.b",
            "blocks.0.attn.W_Q",
            "blocks.0.attn.W_O",
            "blocks.0.attn.b_Q",
            "blocks.0.attn.b_O",
            "blocks.0.attn.W_K",
            "blocks.0.attn.W_V",
            "blocks.0.attn.b_K",
            "blocks.0.attn.b_V",
        ]
    );
    assert_eq!(
        &names[names.len() - 4..],
        ["ln_final.w", "ln_final.b", "unembed.W_U", "unembed.b_U"]
    );
    assert_eq!(
        m.layout.get("blocks.1.attn.W_O").unwrap().shape,
        [8, 32, 256]
    );
    assert_eq!(
        m.layout.get("blocks.1.attn.W_K").unwrap().shape,
        [8, 256, 32]
    );
    assert_eq!(m.layout.get("unembed.W_U").unwrap().shape, [256, 5000]);
    // "gpt2" init: W_* ~ N(0, 0.05^2), biases 0, LayerNorm weights 1.
    let p: Vec<f64> = m.init_params(0);
    let we = &p[m.layout.get("embed.W_E").unwrap().range()];
    let mean = we.iter().sum::<f64>() / we.len() as f64;
    let sd = (we.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / we.len() as f64).sqrt();
    assert!(mean.abs() < 1e-3 && (sd - 0.05).abs() < 1e-3, "{mean} {sd}");
    assert!(
        p[m.layout.get("blocks.0.attn.b_V").unwrap().range()]
            .iter()
            .all(|x| *x == 0.0)
    );
    assert!(
        p[m.layout.get("ln_final.w").unwrap().range()]
            .iter()
            .all(|x| *x == 1.0)
    );
}

/// Central differences of the loss against the analytical gradient, coordinate by coordinate
/// over a sample of every tensor, in float64.
fn check_gradient(m: &LanguageModel, nseq: usize, t: usize) {
    let mut p: Vec<f64> = m.init_params(3);
    // Non-trivial LayerNorm affine parameters and biases, so that every path carries gradient.
    for (i, x) in p.iter_mut().enumerate() {
        *x += 0.05 * ((i as f64) * 0.37).sin();
    }
    let toks = tokens(nseq * t, m.config.d_vocab as u32, 5);
    let mut r = LmRunner::new();
    let mut g = vec![0.0; p.len()];
    r.run(m, &p, &toks, nseq, t, Some(&mut g)).unwrap();
    let h = 1e-5;
    let mut worst = 0.0f64;
    for info in &m.layout.params {
        let range = info.range();
        let step = (range.len() / 7).max(1);
        for i in range.step_by(step) {
            let old = p[i];
            p[i] = old + h;
            let up = r.run(m, &p, &toks, nseq, t, None).unwrap();
            p[i] = old - h;
            let down = r.run(m, &p, &toks, nseq, t, None).unwrap();
            p[i] = old;
            let fd = (up - down) / (2.0 * h);
            let err = (fd - g[i]).abs() / (1e-4 + fd.abs().max(g[i].abs()));
            worst = worst.max(err);
            assert!(err < 1e-5, "{} [{i}]: fd {fd} vs grad {}", info.name, g[i]);
        }
    }
    eprintln!("worst relative error {worst:.2e}");
}

#[test]
fn gradient_matches_finite_differences() {
    for level in stagewise_engine::simd::supported() {
        stagewise_engine::simd::with_level(level, || {
            // d_head 8 runs the engine's lane-parallel attention kernel, 6 its reference loops;
            // sequences of LONG_T tokens or more its blocked-GEMM kernels.
            check_gradient(&tiny(8, 9), 3, 9);
            check_gradient(&tiny(6, 9), 2, 7);
            let long = stagewise_engine::attention::LONG_T + 5;
            check_gradient(&tiny(6, long), 1, long);
        })
        .unwrap();
        eprintln!("checked path {level}");
    }
}

#[test]
fn splitting_a_batch_into_chunks_and_groups_changes_nothing() {
    // t = 64: 32 sequences per chunk, so 100 sequences make 4 chunks in 4 groups.
    let m = tiny(8, 64);
    let p: Vec<f64> = m.init_params(1);
    let (nseq, t) = (100, 64);
    let toks = tokens(nseq * t, 11, 9);
    let mut r = LmRunner::new();
    let mut g = vec![0.0; p.len()];
    let loss = r.run(&m, &p, &toks, nseq, t, Some(&mut g)).unwrap();
    let all_losses = r.token_losses().to_vec();
    // The same sequences one at a time.
    let mut g_sum = vec![0.0; p.len()];
    let mut l_sum = 0.0;
    let mut one = LmRunner::new();
    for s in 0..nseq {
        let mut gs = vec![0.0; p.len()];
        l_sum += one
            .run(&m, &p, &toks[s * t..(s + 1) * t], 1, t, Some(&mut gs))
            .unwrap();
        assert_eq!(
            one.token_losses(),
            &all_losses[s * (t - 1)..(s + 1) * (t - 1)]
        );
        for (a, b) in g_sum.iter_mut().zip(&gs) {
            *a += *b;
        }
    }
    assert!((loss - l_sum / nseq as f64).abs() < 1e-12);
    for (a, b) in g.iter().zip(&g_sum) {
        assert!((a - b / nseq as f64).abs() < 1e-12);
    }
    let pos_mean = r.position_losses().iter().sum::<f64>() / (t - 1) as f64;
    assert!((pos_mean - loss).abs() < 1e-12);
    // Bitwise the same on 1 and 3 threads.
    let run_on = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut r = LmRunner::<f32>::new();
            let pf: Vec<f32> = m.init_params(1);
            let mut g = vec![0.0f32; pf.len()];
            let l = r.run(&m, &pf, &toks, nseq, t, Some(&mut g)).unwrap();
            (l, g)
        })
    };
    assert_eq!(run_on(1), run_on(3));
}

#[test]
fn bad_tokens_and_shapes_are_errors() {
    let m = tiny(8, 9);
    let p: Vec<f32> = m.init_params(0);
    let mut r = LmRunner::new();
    let err = r.run(&m, &p, &[1, 2, 11, 3], 1, 4, None).unwrap_err();
    assert!(
        err.to_string().contains("token id 11 at position 2"),
        "{err}"
    );
    let err = r.run(&m, &p, &[1; 20], 2, 10, None).unwrap_err();
    assert!(err.to_string().contains("n_ctx = 9"), "{err}");
    let err = r.run(&m, &p, &[1; 7], 2, 4, None).unwrap_err();
    assert!(err.to_string().contains("7 token ids"), "{err}");
}
