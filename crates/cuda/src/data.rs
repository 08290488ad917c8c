//! Regression sequences generated on the device with the CPU's counter-based contract
//! (`stagewise_train::data`): sequence `i` of the set keyed `(seed, tag, a)` is a pure function of
//! those, so a batch is the same on either device (up to the last bit of f64 `log`/`cos`/`sin`).

use std::sync::Arc;

use stagewise_train::data::{SequenceDistribution, TaskDistribution};

use crate::device::{Arg, Buf, Device, GpuError, Ptr};

/// Which sequences a generated batch holds.
#[derive(Clone, Copy, Debug)]
pub enum Pick {
    /// Sequences `base..base + B` of the set.
    Range { base: u32 },
    /// Minibatches: element `s` of stream `(seed, tag, a, chain)` picks a sequence uniformly from
    /// `[0, n)`; chain = `chain0 + q % chains`, or 0 for all when `shared`.
    Minibatch {
        seed: u64,
        tag: u32,
        a: u32,
        chain0: u32,
        chains: usize,
        shared: bool,
        n: u64,
    },
}

/// The distribution's task table on the device.
pub struct DeviceData {
    pub dist: SequenceDistribution,
    kind: i32,
    num_tasks: u64,
    tasks: Buf<f64>,
}

impl DeviceData {
    pub fn new(dev: &Arc<dyn Device>, dist: &SequenceDistribution) -> Result<Self, GpuError> {
        let d = dist.tasks.task_size();
        if d > 64 {
            return Err(GpuError::Shape(format!(
                "task_size = {d}: the device data generator supports at most 64"
            )));
        }
        let (kind, table): (i32, Vec<f64>) = match &dist.tasks {
            TaskDistribution::Gaussian { .. } => (0, vec![0.0]),
            TaskDistribution::Discrete { tasks, .. } => (1, tasks.clone()),
            TaskDistribution::Singleton { task } => (2, task.clone()),
        };
        Ok(DeviceData {
            num_tasks: (table.len() / d.max(1)) as u64,
            tasks: Buf::from_host(dev, &table)?,
            dist: dist.clone(),
            kind,
        })
    }

    /// Writes `q x nseq` sequences of set `(seed, tag, a)` to `toks[q, nseq, 2K, D+1]` and
    /// `ys[q, nseq, K]`. With `step_ptr` (a device `u32`, a captured graph's step counter), the
    /// step is read when the kernel runs and replaces `a` of a range or of a minibatch stream.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        dev: &dyn Device,
        toks: Ptr,
        ys: Ptr,
        q: usize,
        nseq: usize,
        seed: u64,
        tag: u32,
        a: u32,
        pick: Pick,
        step_ptr: Ptr,
    ) -> Result<(), GpuError> {
        let (base, ptag, pseed, pa, chain0, chains, shared, n) = match pick {
            Pick::Range { base } => (base, 0, 0, 0, 0, 1, false, 1),
            Pick::Minibatch {
                seed,
                tag,
                a,
                chain0,
                chains,
                shared,
                n,
            } => (0, tag, seed, a, chain0, chains.max(1), shared, n),
        };
        let k = self.dist.k;
        dev.launch(
            "gen_regression",
            q * nseq * k,
            &[
                Arg::Ptr(toks),
                Arg::Ptr(ys),
                self.tasks.arg(),
                Arg::I32(self.kind),
                Arg::U64(self.num_tasks),
                Arg::I32(self.dist.tasks.task_size() as i32),
                Arg::I32(self.dist.k as i32),
                Arg::F64(self.dist.noise_variance.sqrt()),
                Arg::U64(seed),
                Arg::U32(tag),
                Arg::U32(a),
                Arg::U32(base),
                Arg::U32(ptag),
                Arg::U64(pseed),
                Arg::U32(pa),
                Arg::Ptr(step_ptr),
                Arg::U32(chain0),
                Arg::I32(chains as i32),
                Arg::I32(shared as i32),
                Arg::U64(n),
                Arg::I32(nseq as i32),
                Arg::I64((q * nseq * k) as i64),
            ],
        )
    }
}
