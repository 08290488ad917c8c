//! `L_n(w)` on the device for Q weight sets at once: the LLC data set in chunks, each chunk
//! generated on the device (sequences `start..start + m`, as the CPU's `Dataset::full_loss`
//! reads them) and its squared errors summed into per-token means, with no host round trip.
//! The sampler runs it after the update of each draw step for `eval_method: dataset`.

use std::sync::Arc;

use stagewise_engine::rng::tag;
use stagewise_models::RegressionTransformer;

use crate::data::{DeviceData, Pick};
use crate::device::{Buf, Device, GpuError, Ptr};
use crate::model::GpuModel;
use crate::sgld::DatasetSpec;

/// A model of batch `m` and its input buffers.
struct ChunkModel {
    model: GpuModel,
    toks: Buf<f32>,
    ys: Buf<f32>,
}

/// The chunks of one data set and the models that evaluate them.
pub struct FullLoss<'a> {
    data: &'a DatasetSpec,
    device_data: &'a DeviceData,
    q: usize,
    /// A model the caller already holds (with its token and target buffers), used for the chunks
    /// of its batch size so that they cost no second set of activations.
    shared: Option<(&'a GpuModel, Ptr, Ptr)>,
    own: Vec<ChunkModel>,
    /// `(first sequence, sequences)` of each chunk.
    chunks: Vec<(usize, usize)>,
}

impl<'a> FullLoss<'a> {
    /// Plans chunks of at most `chunk` sequences (the shared model's batch, if given) for `q`
    /// weight sets and allocates a model for each chunk size the shared one cannot take.
    pub fn new(
        dev: &Arc<dyn Device>,
        model: &RegressionTransformer,
        data: &'a DatasetSpec,
        device_data: &'a DeviceData,
        q: usize,
        chunk: usize,
        shared: Option<(&'a GpuModel, Ptr, Ptr)>,
    ) -> Result<Self, GpuError> {
        if data.n == 0 {
            return Err(GpuError::Shape("the data set has no sequences".into()));
        }
        if let Some((m, _, _)) = &shared
            && m.q != q
        {
            return Err(GpuError::Shape(format!(
                "the shared model holds {} weight sets, not {q}",
                m.q
            )));
        }
        let chunk = shared
            .as_ref()
            .map_or(chunk, |(m, _, _)| m.b)
            .clamp(1, data.n);
        let chunks: Vec<(usize, usize)> = (0..data.n)
            .step_by(chunk)
            .map(|s| (s, chunk.min(data.n - s)))
            .collect();
        let k = data.dist.k;
        let d1 = model.config.token_size();
        let mut own: Vec<ChunkModel> = Vec::new();
        for &(_, m) in &chunks {
            let covered = shared.as_ref().is_some_and(|(g, _, _)| g.b == m)
                || own.iter().any(|c| c.model.b == m);
            if !covered {
                own.push(ChunkModel {
                    model: GpuModel::new(dev, model, q, m, 2 * k)?,
                    toks: Buf::new(dev, q * m * 2 * k * d1)?,
                    ys: Buf::new(dev, q * m * k)?,
                });
            }
        }
        Ok(FullLoss {
            data,
            device_data,
            q,
            shared,
            own,
            chunks,
        })
    }

    /// `acc[Q, K]` (overwritten) = the mean squared error over the data set per token position
    /// at the weights `w[Q, P]`. Launches only (capturable in a graph); the result is on the
    /// device when the stream reaches it.
    pub fn launch(&self, d: &dyn Device, w: Ptr, acc: Ptr) -> Result<(), GpuError> {
        let inv_n = (1.0 / self.data.n as f64) as f32;
        for (i, &(start, m)) in self.chunks.iter().enumerate() {
            let (model, toks, ys) = match &self.shared {
                Some((g, t, y)) if g.b == m => (*g, *t, *y),
                _ => {
                    let c = self
                        .own
                        .iter()
                        .find(|c| c.model.b == m)
                        .expect("a model for every chunk size");
                    (&c.model, c.toks.ptr, c.ys.ptr)
                }
            };
            self.device_data.generate(
                d,
                toks,
                ys,
                self.q,
                m,
                self.data.seed,
                tag::LLC_DATASET,
                0,
                Pick::Range { base: start as u32 },
                Ptr::NULL,
            )?;
            model.forward(w, toks, Some(ys))?;
            model.add_token_error_sums(acc, inv_n, if i == 0 { 0.0 } else { 1.0 })?;
        }
        Ok(())
    }
}

/// `L_n(w)` and its per-token parts at each centre, over the whole data set (as the CPU's
/// `Dataset::full_loss`), in chunks of at most `chunk` sequences per centre.
pub fn full_losses(
    dev: &Arc<dyn Device>,
    model: &RegressionTransformer,
    data: &DatasetSpec,
    centres: &[Vec<f32>],
    chunk: usize,
) -> Result<Vec<(f64, Vec<f64>)>, GpuError> {
    let q = centres.len();
    let k = data.dist.k;
    let params: Vec<f32> = centres.concat();
    if params.len() != q * model.num_params() {
        return Err(GpuError::Shape("a centre does not fit the model".into()));
    }
    if q == 0 {
        return Ok(Vec::new());
    }
    let w = Buf::from_host(dev, &params)?;
    let device_data = DeviceData::new(dev, &data.dist)?;
    let acc = Buf::<f32>::new(dev, q * k)?;
    FullLoss::new(dev, model, data, &device_data, q, chunk, None)?.launch(
        dev.as_ref(),
        w.ptr,
        acc.ptr,
    )?;
    Ok(acc
        .download()?
        .chunks(k)
        .map(|c| {
            let parts: Vec<f64> = c.iter().map(|v| *v as f64).collect();
            (parts.iter().sum::<f64>() / k as f64, parts)
        })
        .collect())
}
