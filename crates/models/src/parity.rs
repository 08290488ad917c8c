//! The multitask sparse parity MLP (reference `icl.other.parity.MLP`, after Michaud et al. 2023):
//! `fc1` (Linear, input -> hidden) -> ReLU -> `fc2` (Linear, hidden -> 2 logits), PyTorch's
//! default init, mean cross-entropy. Explicit forward and backward over a flat parameter
//! vector in `state_dict()` order: `fc1.weight [H, I]`, `fc1.bias [H]`, `fc2.weight [2, H]`,
//! `fc2.bias [2]`.

use stagewise_engine::Float;
use stagewise_engine::linear::{linear_backward, linear_forward};
use stagewise_engine::relu::{relu_backward, relu_forward};
use stagewise_engine::softmax::cross_entropy_rows;

use crate::layout::{Init, ParamLayout, StateDict};
use crate::regression::ModelError;

/// Logits per sample: parity 0 or 1.
pub const CLASSES: usize = 2;

/// Shapes of the MLP: input = `num_tasks` control bits then `num_features` task bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParityConfig {
    pub num_tasks: usize,
    pub num_features: usize,
    pub hidden_dim: usize,
}

impl ParityConfig {
    pub fn input_dim(&self) -> usize {
        self.num_tasks + self.num_features
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParityMlp {
    pub config: ParityConfig,
    pub layout: ParamLayout,
}

/// Activations of one batch, kept for the backward pass.
#[derive(Clone, Debug, Default)]
pub struct ParityWorkspace<T> {
    /// `fc1` output before the ReLU `[B, H]`, after it `[B, H]`.
    pre: Vec<T>,
    hidden: Vec<T>,
    /// Logits `[B, 2]`, overwritten by their gradient.
    logits: Vec<T>,
    dhidden: Vec<T>,
    targets: Vec<u32>,
    /// Cross-entropy of each sample of the last batch.
    pub losses: Vec<f64>,
    /// Predicted class of each sample (argmax of the logits; ties to 0 as `torch.max`).
    pub predictions: Vec<u8>,
}

impl ParityMlp {
    pub fn new(config: ParityConfig) -> Result<Self, ModelError> {
        for (field, v) in [
            ("num_tasks", config.num_tasks),
            ("num_features", config.num_features),
            ("hidden_dim", config.hidden_dim),
        ] {
            if v == 0 {
                return Err(ModelError::Invalid {
                    field,
                    value: v.to_string(),
                    expected: "at least 1".into(),
                });
            }
        }
        let (i, h) = (config.input_dim(), config.hidden_dim);
        let mut layout = ParamLayout::default();
        layout.push("fc1.weight".into(), vec![h, i], Init::Uniform { fan_in: i });
        layout.push("fc1.bias".into(), vec![h], Init::Uniform { fan_in: i });
        layout.push(
            "fc2.weight".into(),
            vec![CLASSES, h],
            Init::Uniform { fan_in: h },
        );
        layout.push(
            "fc2.bias".into(),
            vec![CLASSES],
            Init::Uniform { fan_in: h },
        );
        Ok(ParityMlp { config, layout })
    }

    pub fn num_params(&self) -> usize {
        self.layout.len
    }

    /// Fresh parameters (PyTorch's `nn.Linear` law, our random streams).
    pub fn init_params<T: Float>(&self, seed: u64) -> Vec<T> {
        self.layout.init_params(seed)
    }

    /// The logits `[b, 2]` of `b` samples `x [b, input_dim]` at parameters `p`.
    pub fn logits<T: Float>(&self, p: &[T], x: &[T], b: usize) -> Vec<T> {
        let (i, h) = (self.config.input_dim(), self.config.hidden_dim);
        assert_eq!(x.len(), b * i, "parity MLP: inputs are [{b}, {i}]");
        let (w1, rest) = p.split_at(h * i);
        let (b1, rest) = rest.split_at(h);
        let (w2, b2) = rest.split_at(CLASSES * h);
        let (mut pre, mut hidden) = (vec![T::ZERO; b * h], vec![T::ZERO; b * h]);
        let mut out = vec![T::ZERO; b * CLASSES];
        linear_forward(&mut pre, x, w1, Some(b1), b, i, h);
        relu_forward(&mut hidden, &pre);
        linear_forward(&mut out, &hidden, w2, Some(b2), b, h, CLASSES);
        out
    }

    /// Mean cross-entropy of the `b = labels.len()` samples `x [b, input_dim]` (0/1 values) at
    /// parameters `p`; with `grad`, its gradient is written there (overwritten). Per-sample
    /// losses and predictions are left in `ws`.
    pub fn loss<T: Float>(
        &self,
        p: &[T],
        x: &[T],
        labels: &[u8],
        ws: &mut ParityWorkspace<T>,
        grad: Option<&mut [T]>,
    ) -> f64 {
        let (i, h, b) = (
            self.config.input_dim(),
            self.config.hidden_dim,
            labels.len(),
        );
        assert_eq!(p.len(), self.num_params(), "parity MLP: parameter count");
        assert_eq!(x.len(), b * i, "parity MLP: inputs are [{b}, {i}]");
        let (w1, rest) = p.split_at(h * i);
        let (b1, rest) = rest.split_at(h);
        let (w2, b2) = rest.split_at(CLASSES * h);
        ws.pre.resize(b * h, T::ZERO);
        ws.hidden.resize(b * h, T::ZERO);
        ws.logits.resize(b * CLASSES, T::ZERO);
        ws.losses.resize(b, 0.0);
        linear_forward(&mut ws.pre, x, w1, Some(b1), b, i, h);
        relu_forward(&mut ws.hidden, &ws.pre);
        linear_forward(&mut ws.logits, &ws.hidden, w2, Some(b2), b, h, CLASSES);
        ws.predictions.clear();
        ws.predictions.extend(
            ws.logits
                .chunks_exact(CLASSES)
                .map(|r| u8::from(r[1] > r[0])),
        );
        ws.targets.clear();
        ws.targets.extend(labels.iter().map(|&y| y as u32));
        let dscale = T::from_f64(1.0 / b.max(1) as f64);
        cross_entropy_rows(&mut ws.logits, &ws.targets, CLASSES, &mut ws.losses, dscale);
        let loss = ws.losses.iter().sum::<f64>() / b.max(1) as f64;
        if let Some(g) = grad {
            assert_eq!(g.len(), p.len(), "parity MLP: gradient length");
            g.fill(T::ZERO);
            let (gw1, rest) = g.split_at_mut(h * i);
            let (gb1, rest) = rest.split_at_mut(h);
            let (gw2, gb2) = rest.split_at_mut(CLASSES * h);
            ws.dhidden.resize(b * h, T::ZERO);
            linear_backward(
                Some(&mut ws.dhidden),
                false,
                gw2,
                Some(gb2),
                &ws.logits,
                &ws.hidden,
                w2,
                b,
                h,
                CLASSES,
            );
            // d(pre) in place of d(hidden): the ReLU mask of the forward pass.
            let dh = std::mem::take(&mut ws.dhidden);
            let mut dpre = std::mem::take(&mut ws.hidden);
            relu_backward(&mut dpre, &dh, &ws.pre);
            linear_backward(None, false, gw1, Some(gb1), &dpre, x, w1, b, i, h);
            ws.dhidden = dh;
            ws.hidden = dpre;
        }
        loss
    }
}

impl StateDict for ParityMlp {
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
}
