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
use crate::device::{Arg, Buf, Device, GpuError, Ptr};
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

    /// `(lr / bc1, sqrt(bc2))` of update number `steps` (1-based), as the CPU computes them.
    pub fn constants(&self, steps: u64, lr: f64) -> (f32, f32) {
        let bc1 = 1.0 - self.beta1.powi(steps as i32);
        let bc2 = 1.0 - self.beta2.powi(steps as i32);
        ((lr / bc1) as f32, bc2.sqrt() as f32)
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
        let (step_size, bc2_sqrt) = self.constants(self.steps, lr);
        self.launch(
            dev,
            params,
            grad,
            (step_size, bc2_sqrt),
            Ptr::NULL,
            Ptr::NULL,
        )
    }

    /// The update launch; with `consts` and `counter`, its constants are read on the device
    /// (`adam_step`'s window table) and `fixed` is ignored.
    pub fn launch(
        &self,
        dev: &dyn Device,
        params: &Buf<f32>,
        grad: &Buf<f32>,
        fixed: (f32, f32),
        consts: Ptr,
        counter: Ptr,
    ) -> Result<(), GpuError> {
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
                Arg::F32(fixed.0),
                Arg::F32(fixed.1),
                Arg::Ptr(consts),
                Arg::Ptr(counter),
                Arg::F32(self.eps as f32),
                Arg::F32(self.weight_decay as f32),
                Arg::I32((self.weight_decay != 0.0) as i32),
                Arg::I64(params.len as i64),
            ],
        )
    }
}

/// Steps per window of `CudaEngine::run`: the host fills the Adam constants of a window, the
/// device runs its steps without a round trip, and the window's losses come back at its end.
const WINDOW: usize = 128;

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
    /// `run`'s state: [step, first step of the window], the window's Adam constants and
    /// per-token losses, and the captured step (where the device has graphs).
    counter: Buf<u32>,
    consts: Buf<f32>,
    history: Buf<f32>,
    graph: Option<u64>,
    captured: bool,
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
            counter: Buf::from_host(&dev, &[0u32, 0])?,
            consts: Buf::new(&dev, 2 * WINDOW)?,
            history: Buf::new(&dev, WINDOW * k)?,
            graph: None,
            captured: false,
            gpu,
            model,
            dev,
        })
    }

    /// The device memory a run of `config` needs at its peak: the engine, a window of steps and
    /// an evaluation of `eval_batch_size` sequences, counted on [`crate::tally`].
    pub fn peak_bytes(
        config: &TrainConfig,
        model: &RegressionTransformer,
        data: &SequenceDistribution,
    ) -> Result<usize, GpuError> {
        crate::tally::peak_bytes(|dev| {
            let mut e = CudaEngine::new(dev.clone(), config, model.clone(), data.clone())?;
            e.run_window(0, &[0.0]).map(drop)?;
            let (n, t) = (config.eval_batch_size, 2 * data.k);
            let toks = vec![0.0f32; n * t * model.config.token_size()];
            let mut out = vec![0.0f32; n * data.k];
            e.predict(&toks, n, t, &mut out)
                .map_err(|e| GpuError::Driver(e.to_string()))
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
            Ptr::NULL,
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

    /// One step that reads everything step-dependent from `counter` and `consts`: batch
    /// `counter[0]`, forward, backward, its per-token losses into the window history, Adam.
    fn counted_step(&self) -> Result<(), GpuError> {
        let dev = self.dev.as_ref();
        self.data.generate(
            dev,
            self.toks.ptr,
            self.ys.ptr,
            1,
            self.gpu.b,
            self.sampling_seed,
            tag::TRAIN_BATCH,
            0,
            Pick::Range { base: 0 },
            self.counter.ptr,
        )?;
        self.gpu
            .forward(self.params.ptr, self.toks.ptr, Some(self.ys.ptr))?;
        self.gpu
            .backward(self.params.ptr, self.toks.ptr, self.grad.ptr)?;
        let k = self.gpu.k();
        dev.launch(
            "record_window",
            k,
            &[
                self.history.arg(),
                self.gpu.tok_loss.arg(),
                Arg::I64(k as i64),
                self.counter.arg(),
            ],
        )?;
        self.adam.launch(
            dev,
            &self.params,
            &self.grad,
            (0.0, 0.0),
            self.consts.ptr,
            self.counter.ptr,
        )?;
        dev.launch("advance_counter", 1, &[self.counter.arg(), Arg::I64(1)])
    }

    /// Steps `t0 ..` at `lrs`, at most one window: no host round trip inside.
    fn run_window(&mut self, t0: u64, lrs: &[f64]) -> Result<Vec<f64>, GpuError> {
        let mut consts = Vec::with_capacity(2 * lrs.len());
        for (i, lr) in lrs.iter().enumerate() {
            let (a, b) = self.adam.constants(self.adam.steps + 1 + i as u64, *lr);
            consts.extend([a, b]);
        }
        self.consts.upload_at(0, &consts)?;
        self.counter.upload(&[t0 as u32, t0 as u32])?;
        if !self.captured {
            self.captured = true;
            let dev = self.dev.clone();
            if crate::sgld::USE_GRAPHS.load(std::sync::atomic::Ordering::Relaxed) {
                self.graph = crate::sgld::capture(dev.as_ref(), || self.counted_step());
            }
        }
        for _ in lrs {
            match self.graph {
                Some(g) => self.dev.replay(g)?,
                None => self.counted_step()?,
            }
        }
        self.adam.steps += lrs.len() as u64;
        let k = self.gpu.k();
        let h = self.history.download_range(0, lrs.len() * k)?;
        Ok(h.chunks(k)
            .map(|c| c.iter().map(|v| *v as f64).sum::<f64>() / k as f64)
            .collect())
    }
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        if let Some(g) = self.graph.take() {
            self.dev.drop_graph(g);
        }
    }
}

impl StepEngine<f32> for CudaEngine {
    /// Windows of up to 128 steps, each one graph replay per step (where the device has graphs)
    /// and one read-back of the window's losses at its end.
    fn run(&mut self, t0: u64, lrs: &[f64]) -> Result<Vec<f64>, TrainError> {
        let mut out = Vec::with_capacity(lrs.len());
        for (w, chunk) in lrs.chunks(WINDOW).enumerate() {
            let start = t0 + (w * WINDOW) as u64;
            let losses = self.run_window(start, chunk).map_err(dev_err)?;
            if let Some(i) = losses.iter().position(|l| !l.is_finite()) {
                return Err(TrainError::Diverged {
                    step: start + i as u64,
                    loss: losses[i],
                });
            }
            out.extend(losses);
        }
        Ok(out)
    }

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

    fn state(&self) -> Result<TrainState<f32>, TrainError> {
        Ok(TrainState {
            params: self.params.download().map_err(dev_err)?,
            exp_avg: self.adam.m.download().map_err(dev_err)?,
            exp_avg_sq: self.adam.v.download().map_err(dev_err)?,
            steps_done: self.adam.steps,
        })
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
