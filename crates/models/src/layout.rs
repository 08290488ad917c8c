//! Flat parameter storage: one contiguous vector, described by named, shaped slices.

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};

/// How a parameter is initialised (PyTorch defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, as `nn.Linear` weights and biases.
    Uniform { fan_in: usize },
    /// Constant (LayerNorm weight 1, bias 0).
    Const(f64),
    /// `N(0, std^2)` (TransformerLens' "gpt2" init of weight matrices).
    Normal { std: f64 },
}

/// One named tensor inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// State-dict key, e.g. `token_sequence_transformer.blocks.0.attention.attention.weight`.
    pub name: String,
    /// Torch shape (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    pub offset: usize,
    pub init: Init,
}

impl ParamInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
    /// True for LayerNorm weights and biases.
    pub fn is_layer_norm(&self) -> bool {
        self.name.contains("layer_norms")
            || self.name.contains("unembedding.0.")
            || self.name.contains(".ln1.")
            || self.name.starts_with("ln_final.")
    }
}

/// Parameters in `named_parameters()` order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamLayout {
    pub params: Vec<ParamInfo>,
    pub len: usize,
}

impl ParamLayout {
    /// `(state-dict name, number of values)` of every tensor, in order.
    pub fn named_sizes(&self) -> Vec<(String, usize)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.len()))
            .collect()
    }

    /// Appends a tensor and returns its offset.
    pub fn push(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        let offset = self.len;
        let info = ParamInfo {
            name,
            shape,
            offset,
            init,
        };
        self.len += info.len();
        self.params.push(info);
        offset
    }

    /// Fresh parameters: tensor `q`'s random draws come from stream `(seed, MODEL_INIT, q)`.
    pub fn init_params<T: Float>(&self, seed: u64) -> Vec<T> {
        let mut p = vec![T::ZERO; self.len];
        for (q, info) in self.params.iter().enumerate() {
            let dst = &mut p[info.range()];
            let stream = Stream::new(seed, tag::MODEL_INIT, q as u32, 0);
            let mut draws = vec![0.0; dst.len()];
            match info.init {
                Init::Const(v) => dst.fill(T::from_f64(v)),
                Init::Uniform { fan_in } => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    stream.fill_uniform(&mut draws);
                    for (d, u) in dst.iter_mut().zip(draws) {
                        *d = T::from_f64((2.0 * u - 1.0) * bound);
                    }
                }
                Init::Normal { std } => {
                    stream.fill_normal(&mut draws);
                    for (d, z) in dst.iter_mut().zip(draws) {
                        *d = T::from_f64(z * std);
                    }
                }
            }
        }
        p
    }

    pub fn get(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// A model whose parameters are saved as a PyTorch `state_dict`: its flat layout plus any
/// non-parameter buffers the reference's module registers (name, shape, float32 values).
pub trait StateDict {
    fn layout(&self) -> &ParamLayout;
    fn buffers(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        Vec::new()
    }
    fn num_params(&self) -> usize {
        self.layout().len
    }
}
