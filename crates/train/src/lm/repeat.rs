//! Training rows with repeated text (`repeat_fraction`, a stagewise option the reference does
//! not have): a fixed, seeded share of the rows repeat their own text, so that copying from
//! earlier in the context pays within the few million tokens a quick run sees. On natural text
//! alone induction heads come after about a billion tokens (the paper's LM4). The period and
//! the start of the repetition vary from row to row, so that no head attending at a fixed
//! distance can do the copying: it takes an induction head.

use stagewise_engine::rng::{Stream, tag};
use stagewise_models::language::RowSource;

/// A row's repetition: from token `start` after BOS on, every token repeats the one `period`
/// before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeat {
    pub start: usize,
    pub period: usize,
}

/// Shortest period, and fewest repeated tokens.
pub const MIN_SPAN: usize = 4;

/// `inner`'s rows, of which a `fraction` (chosen per row index by `seed`) repeat: with
/// `n = n_ctx - 1` tokens after BOS, a period uniform in `MIN_SPAN..=n / 2` and a start
/// uniform in `period..=n - MIN_SPAN`.
pub struct RepeatedRows<'a> {
    inner: &'a dyn RowSource,
    n_ctx: usize,
    /// Rows `i` whose first draw is below this repeat (out of 2^32).
    threshold: u64,
    stream: Stream,
}

impl<'a> RepeatedRows<'a> {
    pub fn new(inner: &'a dyn RowSource, n_ctx: usize, fraction: f64, seed: u64) -> Self {
        RepeatedRows {
            inner,
            n_ctx,
            threshold: (fraction.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64,
            stream: Stream::new(seed, tag::LM_REPEAT, 0, 0),
        }
    }

    /// Row `i`'s repetition, if it has one.
    pub fn repeat(&self, i: usize) -> Option<Repeat> {
        let n = self.n_ctx - 1;
        if n / 2 < MIN_SPAN {
            return None;
        }
        let w = self.stream.block(i as u32);
        if w[0] as u64 >= self.threshold {
            return None;
        }
        // Uniform in 0..k from a 32-bit word.
        let below = |x: u32, k: usize| ((x as u64 * k as u64) >> 32) as usize;
        let period = MIN_SPAN + below(w[1], n / 2 - MIN_SPAN + 1);
        let start = period + below(w[2], n - MIN_SPAN - period + 1);
        Some(Repeat { start, period })
    }
}

impl RowSource for RepeatedRows<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn row_into(&self, i: usize, out: &mut [u32]) {
        self.inner.row_into(i, out);
        if let Some(r) = self.repeat(i) {
            for j in 1 + r.start..self.n_ctx {
                out[j] = out[j - r.period];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(rows: usize, n_ctx: usize) -> (Vec<u32>, usize) {
        ((0..(rows * n_ctx) as u32).collect(), n_ctx)
    }

    #[test]
    fn chosen_rows_repeat_their_text_and_the_rest_are_untouched() {
        let (rows, n_ctx) = (4000, 33);
        let c = corpus(rows, n_ctx);
        let r = RepeatedRows::new(&c, n_ctx, 0.25, 7);
        let (mut got, mut orig) = (vec![0u32; n_ctx], vec![0u32; n_ctx]);
        let (mut repeated, mut periods, mut starts) = (0, vec![0; 17], vec![0; 33]);
        for i in 0..rows {
            r.row_into(i, &mut got);
            c.row_into(i, &mut orig);
            let Some(Repeat { start, period }) = r.repeat(i) else {
                assert_eq!(got, orig, "row {i}");
                continue;
            };
            repeated += 1;
            periods[period] += 1;
            starts[start] += 1;
            assert!((MIN_SPAN..=16).contains(&period) && period <= start && start <= 28);
            // The corpus counts up, so token j after BOS is its own original index or, from
            // `start` on, the original index of the token at the same phase of the period.
            for j in 0..n_ctx {
                let mut k = j;
                while k > start {
                    k -= period;
                }
                assert_eq!(got[j], orig[k], "row {i}, position {j}");
            }
        }
        // 1000 expected; a binomial's standard deviation is ~27.
        assert!((880..1120).contains(&repeated), "{repeated} of {rows}");
        // Every period and many starts occur: no fixed distance does the copying.
        assert!(periods[MIN_SPAN..].iter().all(|&k| k > 0), "{periods:?}");
        assert!(
            starts.iter().filter(|&&k| k > 0).count() >= 20,
            "{starts:?}"
        );
    }

    #[test]
    fn the_choice_depends_on_the_seed_and_fraction_only() {
        let (rows, n_ctx) = (64, 40);
        let c = corpus(rows, n_ctx);
        let none = RepeatedRows::new(&c, n_ctx, 0.0, 3);
        assert!((0..rows).all(|i| none.repeat(i).is_none()));
        let all = RepeatedRows::new(&c, n_ctx, 1.0, 3);
        assert!((0..rows).all(|i| all.repeat(i).is_some()));
        let short = RepeatedRows::new(&c, 2 * MIN_SPAN, 1.0, 3);
        assert!(
            short.repeat(0).is_none(),
            "no room for a period and its repeat"
        );
        let pick = |r: &RepeatedRows| (0..rows).map(|i| r.repeat(i)).collect::<Vec<_>>();
        let a = RepeatedRows::new(&c, n_ctx, 0.5, 3);
        assert_eq!(pick(&a), pick(&RepeatedRows::new(&c, n_ctx, 0.5, 3)));
        assert_ne!(pick(&a), pick(&RepeatedRows::new(&c, n_ctx, 0.5, 4)));
    }
}
