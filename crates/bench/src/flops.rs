//! Floating-point operations of the L2H4 model's forward and backward pass: the full work
//! (what PyTorch does, [`flops_per_pass`]) and the work stagewise needs ([`flops_done_per_pass`]),
//! which the benchmarks divide by time and by the GEMM peak.

/// Floating-point operations of one forward + backward pass of `rows` rows (tokens) of the
/// L2H4 model at T tokens per sequence: the linear layers (2 flops per multiply-add; backward
/// twice the forward) and causal attention (scores and weighted values over T(T+1)/2 pairs).
pub fn flops_per_pass(cfg: &stagewise_models::RegressionConfig, rows: usize, t: usize) -> f64 {
    let (c, m, d1) = (
        cfg.embed_size as f64,
        cfg.mlp_size as f64,
        cfg.token_size() as f64,
    );
    let per_row_linear = d1 * c + cfg.num_layers as f64 * (3.0 * c * c + c * c + 2.0 * c * m);
    let pairs_per_row = (t + 1) as f64 / 2.0;
    let per_row_attn = cfg.num_layers as f64 * 2.0 * pairs_per_row * c;
    3.0 * 2.0 * rows as f64 * (per_row_linear + per_row_attn)
}

/// Floating-point operations the CPU engine needs for one forward + backward pass of `nseq`
/// sequences of `t` tokens, as [`flops_per_pass`] counts them, less the work the loss never
/// reads and the engine skips: the last block runs its attention queries, out projection and MLP
/// on the x positions only (`ceil(t/2)` rows per sequence; its QKV projection on every row), and
/// each attention query meets only the keys up to its own position. The block kernels also
/// compute some masked scores, so this is a lower bound of the multiply-adds they run.
pub fn flops_done_per_pass(cfg: &stagewise_models::RegressionConfig, nseq: usize, t: usize) -> f64 {
    let (c, m, d1) = (
        cfg.embed_size as f64,
        cfg.mlp_size as f64,
        cfg.token_size() as f64,
    );
    let (rows, xrows) = ((nseq * t) as f64, (nseq * t.div_ceil(2)) as f64);
    let layers = cfg.num_layers as f64;
    let (qkv, rest) = (3.0 * c * c, c * c + 2.0 * c * m);
    let linear = rows * d1 * c + rows * layers * qkv + rest * (rows * (layers - 1.0) + xrows);
    // Query-key pairs per sequence: all t(t+1)/2 in the first blocks, ceil(t/2)^2 for the last
    // block's x queries (query 2a meets 2a + 1 keys).
    let half = t.div_ceil(2) as f64;
    let pairs = nseq as f64 * ((layers - 1.0) * (t * (t + 1)) as f64 / 2.0 + half * half);
    3.0 * 2.0 * (linear + 2.0 * pairs * c)
}

#[cfg(test)]
mod tests {
    use super::{flops_done_per_pass, flops_per_pass};
    use stagewise_models::RegressionConfig;

    /// One L2H4 sequence at K = 16 (T = 32, D + 1 = 5, C = M = 64), counted by hand. Per row,
    /// QKV is 3C^2 = 12288 multiply-adds and out projection plus MLP C^2 + 2CM = 12288. Full:
    /// linear 32 * (5 * 64 + 2 * 24576) = 1583104, attention 2 layers * 528 pairs * 2 * 64 =
    /// 135168. Needed: the last block's out projection and MLP on 16 rows, 256 pairs there:
    /// linear 32 * 320 + 32 * 2 * 12288 + 12288 * (32 + 16) = 1386496, attention
    /// (528 + 256) * 2 * 64 = 100352. Each times 2 flops and 3 passes.
    #[test]
    fn counts_match_the_hand_count() {
        let cfg = RegressionConfig::l2h4(16);
        assert_eq!(flops_per_pass(&cfg, 32, 32), 6.0 * (1583104.0 + 135168.0));
        assert_eq!(
            flops_done_per_pass(&cfg, 1, 32),
            6.0 * (1386496.0 + 100352.0)
        );
        assert_eq!(
            flops_done_per_pass(&cfg, 3, 32),
            3.0 * flops_done_per_pass(&cfg, 1, 32)
        );
    }
}
