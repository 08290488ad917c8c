//! Flat parameter storage: one contiguous vector, described by named, shaped slices.

/// How a parameter is initialised (PyTorch defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, as `nn.Linear` weights and biases.
    Uniform { fan_in: usize },
    /// Constant (LayerNorm weight 1, bias 0).
    Const(f64),
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
        self.name.contains("layer_norms") || self.name.contains("unembedding.0.")
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

    pub fn get(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }
}
