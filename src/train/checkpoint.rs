//! Writing a run's checkpoints: `last.safetensors` (weights, optimiser state, EMA and the
//! training state in one file, so one atomic rename makes it consistent), `best` and
//! `ema_best`.

use anyhow::Result;
use tch::{nn, Tensor};

use super::ema::Ema;
use super::optim::Optimizer;
use crate::model::weights::write_safetensors;
use crate::run::{Checkpoint, CheckpointMeta, RunDir, State};

fn model_tensors(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub struct Checkpoints {
    run: RunDir,
    meta: CheckpointMeta,
}

impl Checkpoints {
    pub fn new(run: RunDir, meta: CheckpointMeta) -> Self {
        Checkpoints { run, meta }
    }

    fn meta(&self, which: Checkpoint, state: Option<&State>) -> CheckpointMeta {
        CheckpointMeta {
            checkpoint: which,
            state: state.cloned(),
            ..self.meta.clone()
        }
    }

    /// `last.safetensors` and `state.json`. The caller has checked the weights are finite.
    pub fn save_last(
        &self,
        vs: &nn::VarStore,
        opt: &Optimizer,
        ema: Option<&Ema>,
        state: &State,
    ) -> Result<()> {
        let mut t = model_tensors(vs);
        t.extend(opt.state_tensors());
        if let Some(e) = ema {
            t.extend(
                model_tensors(&e.vs)
                    .into_iter()
                    .map(|(n, v)| (format!("ema.{n}"), v)),
            );
        }
        write_safetensors(
            &self.run.checkpoint(Checkpoint::Last),
            &t,
            &self.meta(Checkpoint::Last, Some(state)).to_metadata(),
        )?;
        self.run.write_state(state)?;
        Ok(())
    }

    /// `best.safetensors` (live weights) or `ema_best.safetensors` (EMA weights).
    pub fn save_weights(&self, which: Checkpoint, vs: &nn::VarStore) -> Result<()> {
        write_safetensors(
            &self.run.checkpoint(which),
            &model_tensors(vs),
            &self.meta(which, None).to_metadata(),
        )?;
        Ok(())
    }
}
