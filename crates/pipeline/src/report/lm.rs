//! The language model's part of the report: the test loss with its n-gram scores and the
//! positional ablation, the in-context learning score, and the attention heads' previous-token
//! and prefix-matching scores over training with a table of the last checkpoint's.

use anyhow::Result;
use stagewise_io::table::Table;
use stagewise_report::html::{Block, Section};
use stagewise_report::{Corner, RGBColor, Series, palette};

use super::{chart, figure, spans};
use crate::rundir::Folder;
use crate::stages::Stage;

/// A head whose score at the last checkpoint is at least this is named by its role in the
/// head table (previous-token head, induction head).
pub const ROLE_THRESHOLD: f64 = 0.3;

/// The Loss and Heads sections.
pub fn sections(out: &Folder, metrics: &Table, stages: &[Stage]) -> Result<Vec<Section>> {
    let steps: Vec<f64> = metrics.rows.iter().map(|r| r[0] + 1.0).collect();
    let series = |col: &str| -> Option<Vec<(f64, f64)>> {
        let v = metrics.column(col)?;
        Some(
            steps
                .iter()
                .copied()
                .zip(v)
                .filter(|(_, y)| y.is_finite())
                .collect(),
        )
    };
    let mut loss = chart("Test loss and n-gram losses", "step + 1", "nats", true);
    loss.spans = spans(stages);
    loss.legend = Corner::UpperRight;
    let lines: [(&str, &str, bool); 6] = [
        ("test/loss", "test loss", false),
        ("test/loss_no_pos", "test loss, W_pos zeroed", false),
        (
            "bigram/score",
            "bigram score (cross-entropy to the bigram distribution)",
            false,
        ),
        ("bigram/entropy", "bigram entropy (its floor)", true),
        ("trigram/loss", "loss on common trigrams", false),
        ("skip_trigram/loss", "loss on common skip-trigrams", false),
    ];
    for (i, (col, label, dashed)) in lines.into_iter().enumerate() {
        if let Some(pts) = series(col) {
            let mut s = Series::line(label, pts, palette(i));
            s.dashed = dashed;
            loss.series.push(s);
        }
    }
    let mut blocks = vec![figure(
        out,
        "loss",
        &loss,
        "Mean next-token cross-entropy on the test rows, the same with the positional embedding zeroed, the bigram score and its entropy floor, and the loss on tokens that complete the training data's most frequent trigrams and skip-trigrams (definitions in the README); stages shaded",
    )?];
    if let Some(pts) = series("icl/score") {
        let mut c = chart("In-context learning score", "step + 1", "nats", true);
        c.spans = spans(stages);
        c.series.push(Series::line(
            "loss at an early token - at a late one",
            pts,
            palette(0),
        ));
        blocks.push(figure(
            out,
            "icl",
            &c,
            "Loss at an early token position minus the loss at a late one (Olsson et al. 2022: the 50th and 500th tokens, scaled to shorter contexts); it grows as the model uses its context",
        )?);
    }
    let mut sections = vec![Section {
        title: "Loss".into(),
        blocks,
    }];
    let heads = head_names(metrics);
    if !heads.is_empty() {
        let mut blocks = Vec::new();
        for (kind, title, name, caption) in [
            (
                "prev",
                "Previous-token score per head",
                "heads_prev",
                "Mean attention from each test token to the one before it, per head (dashed: layer 0, solid: later layers); stages shaded",
            ),
            (
                "prefix",
                "Prefix-matching score per head",
                "heads_prefix",
                "On a random token sequence repeated twice, the mean attention from each token of the second copy to the token after its first occurrence, per head (dashed: layer 0, solid: later layers): induction heads score high; stages shaded",
            ),
        ] {
            let mut c = chart(title, "step + 1", "attention", true);
            c.spans = spans(stages);
            c.y_range = Some((-0.02, 1.02));
            c.legend = Corner::UpperLeft;
            for (i, (l, h)) in heads.iter().enumerate() {
                if let Some(pts) = series(&format!("heads/{kind}/L{l}H{h}")) {
                    // Palette colours for the first 8 heads, darker shades after.
                    let mut s = Series::line(format!("L{l}H{h}"), pts, shade(palette(i), i / 8));
                    s.dashed = *l == 0;
                    c.series.push(s);
                }
            }
            blocks.push(figure(out, name, &c, caption)?);
        }
        blocks.push(head_table(metrics, &heads));
        sections.push(Section {
            title: "Attention heads".into(),
            blocks,
        });
    }
    Ok(sections)
}

/// `(layer, head)` of every `heads/prev/L{l}H{h}` column, in order.
fn head_names(metrics: &Table) -> Vec<(usize, usize)> {
    metrics
        .header
        .iter()
        .filter_map(|c| {
            let (l, h) = c.strip_prefix("heads/prev/L")?.split_once('H')?;
            Some((l.parse().ok()?, h.parse().ok()?))
        })
        .collect()
}

/// The `round`-th darker shade of `c` (round 0: `c`), so that more than 8 heads stay apart.
fn shade(c: RGBColor, round: usize) -> RGBColor {
    let f = 1.0 / (1 + round) as f64;
    let d = |x: u8| (x as f64 * f) as u8;
    RGBColor(d(c.0), d(c.1), d(c.2))
}

/// Each head's scores at the last checkpoint and their maximum over training, with its role.
fn head_table(metrics: &Table, heads: &[(usize, usize)]) -> Block {
    let last_and_max = |col: String| -> (f64, f64) {
        let v: Vec<f64> = metrics
            .column(&col)
            .unwrap_or_default()
            .into_iter()
            .filter(|x| x.is_finite())
            .collect();
        let last = v.last().copied().unwrap_or(f64::NAN);
        (last, v.iter().copied().fold(f64::NAN, f64::max))
    };
    let step = metrics.rows.last().map_or(0.0, |r| r[0]);
    Block::Table {
        header: [
            "head".to_string(),
            format!("previous-token (step {step})"),
            "max over training".into(),
            format!("prefix-matching (step {step})"),
            "max over training".into(),
            format!("role (score ≥ {ROLE_THRESHOLD})"),
        ]
        .to_vec(),
        rows: heads
            .iter()
            .map(|(l, h)| {
                let (prev, prev_max) = last_and_max(format!("heads/prev/L{l}H{h}"));
                let (prefix, prefix_max) = last_and_max(format!("heads/prefix/L{l}H{h}"));
                let role = role(*l, prev, prefix);
                vec![
                    format!("L{l}H{h}"),
                    format!("{prev:.3}"),
                    format!("{prev_max:.3}"),
                    format!("{prefix:.3}"),
                    format!("{prefix_max:.3}"),
                    role.into(),
                ]
            })
            .collect(),
    }
}

/// A head's role from its last scores: an induction head (prefix-matching, beyond the first
/// layer, which cannot compose with an earlier head), a previous-token head, or none.
pub fn role(layer: usize, prev: f64, prefix: f64) -> &'static str {
    if layer > 0 && prefix >= ROLE_THRESHOLD {
        "induction"
    } else if prev >= ROLE_THRESHOLD {
        "previous-token"
    } else {
        ""
    }
}
