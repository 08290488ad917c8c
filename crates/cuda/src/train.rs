//! Training on the device: `CudaEngine` implements the trainer's `StepEngine`, keeping weights,
//! Adam moments and batches in device memory. Batch `t` is generated on the device from
//! `(sampling seed, TRAIN_BATCH, t)`, as on the CPU; the Adam update is the CPU's bit for bit.

use std::collections::HashMap;
use std::sync::Arc;

use stagewise_engine::rng::tag;
use stagewise_models::RegressionTransformer;
use stagewise_train::config::TrainConfig;
use stagewise_train::data::SequenceDistribution;
use stagewise_train::trainer::{StepEngine, TrainError, TrainState};

use crate::data::{DeviceData, Pick};
use crate::device::{Arg, Buf, Device, GpuError};
use crate::model::GpuModel;

fn dev_err(e: GpuError) -> TrainError {
    TrainError::State(format!("device: {e}"))
}

/// Adam (torch semantics) on device buffers.
pub struct DeviceAdam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub m: Buf<f32>,
    pub v: Buf<f32>,
    pub steps: u64,
}

impl DeviceAdam {
    pub fn new(
        dev: &Arc<dyn Device>,
        n: usize,
        betas: [f64; 2],
        weight_decay: f64,
    ) -> Result<Self, GpuError> {
        Ok(DeviceAdam {
            beta1: betas[0],
            beta2: betas[1],
            eps: 1e-8,
            weight_decay,
            m: Buf::from_host(dev, &vec![0.0; n])?,
            v: Buf::from_host(dev, &vec![0.0; n])?,
            steps: 0,
        })
    }

    /// One update of `params` with `grad` at `lr` (constants rounded to f32 as the CPU does).
    pub fn step(
        &mut self,
        dev: &dyn Device,
        params: &Buf<f32>,
        grad: &Buf<f32>,
        lr: f64,
    ) -> Result<(), GpuError> {
        self.steps += 1;
        let bc1 = 1.0 - self.beta1.powi(self.steps as i32);
        let bc2 = 1.0 - self.beta2.powi(self.steps as i32);
        dev.launch(
            "adam_step",
            params.len,
            &[
                params.arg(),
                grad.arg(),
                self.m.arg(),
                self.v.arg(),
                Arg::F32(self.beta1 as f32),
                Arg::F32(self.beta2 as f32),
                Arg::F32((1.0 - self.beta1) as f32),
                Arg::F32((1.0 - self.beta2) as f32),
                Arg::F32((lr / bc1) as f32),
                Arg::F32(bc2.sqrt() as f32),
                Arg::F32(self.eps as f32),
                Arg::F32(self.weight_decay as f32),
                Arg::I32((self.weight_decay != 0.0) as i32),
                Arg::I64(params.len as i64),
            ],
        )
    }
}

/// The training engine on a device (f32).
pub struct CudaEngine {
    dev: Arc<dyn Device>,
    model: RegressionTransformer,
    gpu: GpuModel,
    data: DeviceData,
    params: Buf<f32>,
    grad: Buf<f32>,
    adam: DeviceAdam,
    toks: Buf<f32>,
    ys: Buf<f32>,
    sampling_seed: u64,
    /// Forward-only models for evaluation shapes `(nseq, t)`.
    eval: HashMap<(usize, usize), (GpuModel, Buf<f32>)>,
}

impl CudaEngine {
    pub fn new(
        dev: Arc<dyn Device>,
        config: &TrainConfig,
        model: RegressionTransformer,
        data: SequenceDistribution,
    ) -> Result<Self, GpuError> {
        let seeds = config.seeds();
        let b = config.batch_size;
        let k = data.k;
        let gpu = GpuModel::new(&dev, &model, 1, b, 2 * k)?;
        let init: Vec<f32> = model.init_params(seeds.model);
        let o = &config.optimizer_config;
        let d1 = model.config.token_size();
        Ok(CudaEngine {
            params: Buf::from_host(&dev, &init)?,
            grad: Buf::new(&dev, init.len())?,
            adam: DeviceAdam::new(&dev, init.len(), o.betas, o.weight_decay)?,
            toks: Buf::new(&dev, b * 2 * k * d1)?,
            ys: Buf::new(&dev, b * k)?,
            data: DeviceData::new(&dev, &data)?,
            sampling_seed: seeds.sampling,
            eval: HashMap::new(),
            gpu,
            model,
            dev,
        })
    }

    /// Batch `t`, forward, backward; the loss, with the gradient left in the engine.
    pub fn loss_and_grad(&mut self, t: u64) -> Result<f64, GpuError> {
        let b = self.gpu.b;
        let dev = self.dev.as_ref();
        self.data.generate(
            dev,
            self.toks.ptr,
            self.ys.ptr,
            1,
            b,
            self.sampling_seed,
            tag::TRAIN_BATCH,
            t as u32,
            Pick::Range { base: 0 },
        )?;
        self.gpu
            .forward(self.params.ptr, self.toks.ptr, Some(self.ys.ptr))?;
        self.gpu
            .backward(self.params.ptr, self.toks.ptr, self.grad.ptr)?;
        Ok(self.gpu.losses()?[0].0)
    }

    /// The gradient of the last `loss_and_grad`.
    pub fn grad(&self) -> Result<Vec<f32>, GpuError> {
        self.grad.download()
    }

    /// The batch of the last `loss_and_grad` (tokens, targets).
    pub fn batch(&self) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
        Ok((self.toks.download()?, self.ys.download()?))
    }

    pub fn device(&self) -> &Arc<dyn Device> {
        &self.dev
    }
}

impl StepEngine<f32> for CudaEngine {
    fn step(&mut self, t: u64, lr: f64) -> Result<f64, TrainError> {
        let loss = self.loss_and_grad(t).map_err(dev_err)?;
        if !loss.is_finite() {
            return Err(TrainError::Diverged { step: t, loss });
        }
        self.adam
            .step(self.dev.as_ref(), &self.params, &self.grad, lr)
            .map_err(dev_err)?;
        Ok(loss)
    }

    fn predict(
        &mut self,
        toks: &[f32],
        nseq: usize,
        t: usize,
        out: &mut [f32],
    ) -> Result<(), TrainError> {
        if !self.eval.contains_key(&(nseq, t)) {
            let m = GpuModel::new(&self.dev, &self.model, 1, nseq, t).map_err(dev_err)?;
            let buf = Buf::new(&self.dev, toks.len()).map_err(dev_err)?;
            self.eval.insert((nseq, t), (m, buf));
        }
        let (m, buf) = &self.eval[&(nseq, t)];
        if toks.len() != buf.len {
            return Err(TrainError::State(format!(
                "{} token values for {nseq} sequences of {t} tokens",
                toks.len()
            )));
        }
        buf.upload(toks).map_err(dev_err)?;
        m.forward(self.params.ptr, buf.ptr, None).map_err(dev_err)?;
        let pred = m.pred.download().map_err(dev_err)?;
        out[..pred.len()].copy_from_slice(&pred);
        Ok(())
    }

    fn state(&self) -> TrainState<f32> {
        let get = |b: &Buf<f32>| {
            b.download()
                .expect("reading the training state from the device")
        };
        TrainState {
            params: get(&self.params),
            exp_avg: get(&self.adam.m),
            exp_avg_sq: get(&self.adam.v),
            steps_done: self.adam.steps,
        }
    }

    fn restore(&mut self, s: TrainState<f32>) -> Result<(), TrainError> {
        s.check_fits(self.params.len)?;
        self.params.upload(&s.params).map_err(dev_err)?;
        self.adam.m.upload(&s.exp_avg).map_err(dev_err)?;
        self.adam.v.upload(&s.exp_avg_sq).map_err(dev_err)?;
        self.adam.steps = s.steps_done;
        Ok(())
    }
}
