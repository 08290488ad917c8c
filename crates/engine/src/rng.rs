//! Counter-based random numbers: Philox4x32-10 (Salmon et al. 2011, Random123).
//!
//! Every random number in stagewise is a pure function of `(seed, tag, a, b, index)`, so a
//! training step's batch depends only on the seed and the step number: resuming a run, changing
//! the thread count or moving to another device never changes the draws.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block: 4 random words from a 128-bit counter and a 64-bit key.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// Purpose tags: each kind of randomness has its own counter space.
pub mod tag {
    pub const MODEL_INIT: u32 = 1;
    pub const TASK_TABLE: u32 = 2;
    pub const TRAIN_BATCH: u32 = 3;
    pub const EVAL_PRETRAIN: u32 = 4;
    pub const EVAL_TRUE: u32 = 5;
    pub const EVAL_SUBSEQUENCE: u32 = 6;
    pub const SGLD_NOISE: u32 = 7;
    pub const SGLD_BATCH: u32 = 8;
    pub const TOY_DATA: u32 = 9;
    pub const LLC_DATASET: u32 = 10;
    pub const SGLD_EVAL_BATCH: u32 = 11;
    pub const ED_DATA: u32 = 12;
    pub const HESSIAN_PROBE: u32 = 13;
    pub const LM_EVAL: u32 = 14;
    pub const PARITY_TASKS: u32 = 15;
    pub const PARITY_TRAIN: u32 = 16;
    pub const PARITY_EVAL: u32 = 17;
    pub const LM_REPEAT: u32 = 18;
    pub const OBSERVABLES: u32 = 19;
}

/// A random stream addressed by `(seed, tag, a, b)`; element `i` is a pure function of those.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    key: [u32; 2],
    tag: u32,
    a: u32,
    b: u32,
}

impl Stream {
    pub fn new(seed: u64, tag: u32, a: u32, b: u32) -> Self {
        Stream {
            key: [seed as u32, (seed >> 32) as u32],
            tag,
            a,
            b,
        }
    }

    /// Block `i` of 4 words.
    #[inline]
    pub fn block(&self, i: u32) -> [u32; 4] {
        philox4x32_10([i, self.b, self.a, self.tag], self.key)
    }

    /// Fills `out` with standard normal draws (Box-Muller on pairs of 32-bit uniforms):
    /// element `i` of the stream goes to `out[i]`.
    pub fn fill_normal(&self, out: &mut [f64]) {
        for (blk, chunk) in out.chunks_mut(4).enumerate() {
            let w = self.block(blk as u32);
            let (z0, z1) = box_muller(w[0], w[1]);
            let (z2, z3) = box_muller(w[2], w[3]);
            for (o, z) in chunk.iter_mut().zip([z0, z1, z2, z3]) {
                *o = z;
            }
        }
    }

    /// Fills `out` with uniform draws in the open interval (0, 1).
    pub fn fill_uniform(&self, out: &mut [f64]) {
        for (blk, chunk) in out.chunks_mut(4).enumerate() {
            let w = self.block(blk as u32);
            for (o, x) in chunk.iter_mut().zip(w) {
                *o = unit(x);
            }
        }
    }

    /// Uniform integer in `[0, n)` for stream element `i` (multiply-shift; bias below 2^-32 * n).
    pub fn below(&self, i: u32, n: u64) -> u64 {
        let w = self.block(i / 4)[(i % 4) as usize];
        (w as u64 * n) >> 32
    }
}

/// A 32-bit word as a uniform draw in the open interval (0, 1).
#[inline]
pub fn unit(x: u32) -> f64 {
    (x as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

#[inline]
fn box_muller(x0: u32, x1: u32) -> (f64, f64) {
    let r = (-2.0 * unit(x0).ln()).sqrt();
    let theta = std::f64::consts::TAU * unit(x1);
    (r * theta.cos(), r * theta.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normals_have_unit_moments_and_streams_differ() {
        let n = 200_000;
        let mut z = vec![0.0; n];
        Stream::new(7, tag::TRAIN_BATCH, 3, 0).fill_normal(&mut z);
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        // Standard errors: mean 1/sqrt(n) = 0.0022, var sqrt(2/n) = 0.0032, kurtosis ~0.011.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "var {var}");
        assert!((kurt - 3.0).abs() < 0.06, "kurtosis {kurt}");
        let mut other = vec![0.0; 8];
        Stream::new(7, tag::TRAIN_BATCH, 4, 0).fill_normal(&mut other);
        assert_ne!(&z[..8], &other[..]);
        let mut again = vec![0.0; 8];
        Stream::new(7, tag::TRAIN_BATCH, 3, 0).fill_normal(&mut again);
        assert_eq!(&z[..8], &again[..]);
    }

    #[test]
    fn below_is_uniform_over_small_ranges() {
        let s = Stream::new(1, tag::TASK_TABLE, 0, 0);
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[s.below(i, 3) as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 400.0, "{counts:?}");
        }
    }
}
