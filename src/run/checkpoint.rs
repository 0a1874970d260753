//! Checkpoints, owned here: what each file holds ([`CheckpointMeta`] in its metadata), writing
//! them (`last.safetensors`: weights, optimiser state, EMA and the training state in one file,
//! so one atomic rename makes it consistent; `best`, `ema_best`), restoring one for a resume
//! and loading one for inference. A change of checkpoint format touches this file only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Checkpoint, State};
use crate::config::augment::Stage;
use crate::config::Arch;
use crate::model::ArchSpec;

/// Metadata inside every checkpoint, so `evaluate` and `predict` need no other file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub checkpoint: Checkpoint,
    pub arch: Arch,
    /// A MUXNet's spec travels inside the checkpoint (the arch JSON may be gone later).
    pub arch_spec: Option<ArchSpec>,
    pub labels: Vec<String>,
    pub eval_stages: Vec<Stage>,
    pub working_size: u32,
    /// The cache's sample type, which predict and explain round file pixels to (absent in
    /// checkpoints from before it was recorded: u8, the default then as now).
    #[serde(default)]
    pub cache_dtype: crate::config::augment::CacheDtype,
    pub resolution: u32,
    pub from_scratch: bool,
    pub muxmed_version: String,
    /// The training state (`last.safetensors` only).
    pub state: Option<State>,
}

/// The safetensors metadata key that holds [`CheckpointMeta`] as JSON.
pub const CHECKPOINT_META_KEY: &str = "muxmed_checkpoint";

impl CheckpointMeta {
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        // Serialising plain data with finite numbers cannot fail.
        m.insert(
            CHECKPOINT_META_KEY.to_string(),
            serde_json::to_string(self).unwrap_or_default(),
        );
        m
    }

    /// Reads the metadata of a safetensors file; `Err` says what is wrong.
    pub fn from_metadata(m: &BTreeMap<String, String>) -> Result<Self, String> {
        let text = m.get(CHECKPOINT_META_KEY).ok_or_else(|| {
            format!("no `{CHECKPOINT_META_KEY}` metadata: not a checkpoint written by muxmed train")
        })?;
        serde_json::from_str(text).map_err(|e| format!("`{CHECKPOINT_META_KEY}` metadata: {e}"))
    }
}

#[cfg(feature = "torch")]
pub use self::torch::*;

#[cfg(feature = "torch")]
mod torch {
    use std::collections::BTreeMap;
    use std::path::Path;

    use anyhow::{anyhow, Context, Result};
    use tch::{nn, Device, Tensor};

    use super::CheckpointMeta;
    use crate::model::device::load_into;
    use crate::model::folded::FoldedNetwork;
    use crate::model::layout::MemoryFormat;
    use crate::model::muxnet::HeadInit;
    use crate::model::network::Network;
    use crate::model::weights::{read_metadata, read_safetensors, write_safetensors};
    use crate::run::{Checkpoint, RunDir, State};

    /// The prefix of the EMA's tensors in `last.safetensors`.
    const EMA_PREFIX: &str = "ema.";

    fn model_tensors(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Writes a run's checkpoints, each with the run's [`CheckpointMeta`].
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

        /// `last.safetensors` (the weights in `vs`, the optimiser's named state tensors, the
        /// EMA's weights) and `state.json`. The caller has checked the weights are finite.
        pub fn save_last(
            &self,
            vs: &nn::VarStore,
            optimizer_state: Vec<(String, Tensor)>,
            ema: Option<&nn::VarStore>,
            state: &State,
        ) -> Result<()> {
            let mut t = model_tensors(vs);
            t.extend(optimizer_state);
            if let Some(e) = ema {
                t.extend(
                    model_tensors(e)
                        .into_iter()
                        .map(|(n, v)| (format!("{EMA_PREFIX}{n}"), v)),
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

    /// The training state inside `last.safetensors` of `run`: where a resume goes on.
    pub fn resume_state(run: &RunDir) -> Result<State> {
        let last = run.checkpoint(Checkpoint::Last);
        CheckpointMeta::from_metadata(&read_metadata(&last)?)
            .map_err(|m| anyhow!("{}: {m}", last.display()))?
            .state
            .ok_or_else(|| anyhow!("{} has no training state", last.display()))
    }

    /// Loads `last.safetensors` of `run` for a resume: the weights into `vs`, the EMA's into
    /// `ema`; returns every tensor of the file for the optimiser to take its state from.
    pub fn restore_for_resume(
        run: &RunDir,
        vs: &nn::VarStore,
        ema: Option<&nn::VarStore>,
    ) -> Result<BTreeMap<String, Tensor>> {
        let t = read_safetensors(&run.checkpoint(Checkpoint::Last))?;
        load_into(vs, &t, "")?;
        if let Some(e) = ema {
            load_into(e, &t, EMA_PREFIX)?;
        }
        Ok(t)
    }

    /// A trained network with what is needed to feed it.
    pub struct LoadedCheckpoint {
        pub vs: nn::VarStore,
        pub net: Network,
        pub meta: CheckpointMeta,
    }

    /// Builds the network described by a checkpoint's metadata and loads its weights
    /// (optimiser and EMA tensors in `last.safetensors` are ignored).
    pub fn load_checkpoint(path: &Path, device: Device) -> Result<LoadedCheckpoint> {
        let meta = CheckpointMeta::from_metadata(&read_metadata(path)?)
            .map_err(|m| anyhow!("{}: {m}", path.display()))?;
        let vs = nn::VarStore::new(device);
        let k = meta.labels.len() as i64;
        let net = match &meta.arch_spec {
            Some(spec) => Network::muxnet(&vs.root(), spec, k, 0.0, HeadInit::Reference)?,
            None => Network::build(&vs.root(), &meta.arch, k, 0.0, HeadInit::Reference)?,
        };
        let t = read_safetensors(path)?;
        load_into(&vs, &t, "").with_context(|| format!("loading {}", path.display()))?;
        Ok(LoadedCheckpoint { vs, net, meta })
    }

    impl LoadedCheckpoint {
        /// The inference model: BatchNorm folded, weights in memory format `f`.
        pub fn folded(&self, f: MemoryFormat) -> FoldedNetwork {
            FoldedNetwork::new(&self.net, f)
        }
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use tch::{nn, Device, Kind, Tensor};

    use super::*;
    use crate::run::RunDir;

    fn store(seed: i64) -> nn::VarStore {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = (vs.root() / "conv").randn("weight", &[4, 3], 0.0, 1.0);
        let _ = (vs.root() / "head").randn("bias", &[4], 0.0, 1.0);
        vs
    }

    fn same(a: &nn::VarStore, b: &nn::VarStore) -> bool {
        let (a, b) = (a.variables(), b.variables());
        a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.equal(w)))
    }

    #[test]
    fn last_round_trips_weights_optimizer_state_ema_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let meta = CheckpointMeta {
            checkpoint: Checkpoint::Last,
            arch: Arch::MuxnetM,
            arch_spec: None,
            labels: vec!["A".into(), "B".into()],
            eval_stages: vec![],
            working_size: 64,
            cache_dtype: Default::default(),
            resolution: 64,
            from_scratch: true,
            muxmed_version: "test".into(),
            state: None,
        };
        let (live, ema) = (store(1), store(2));
        let moment = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let mut state = State::new(7);
        state.opt_step = 42;
        Checkpoints::new(run.clone(), meta)
            .save_last(
                &live,
                vec![("optim.m.conv.weight".into(), moment.copy())],
                Some(&ema),
                &state,
            )
            .unwrap();
        let (live2, ema2) = (store(3), store(4));
        assert!(!same(&live, &live2) && !same(&ema, &ema2));
        let t = restore_for_resume(&run, &live2, Some(&ema2)).unwrap();
        assert!(same(&live, &live2) && same(&ema, &ema2));
        assert!(t["optim.m.conv.weight"].equal(&moment));
        assert_eq!(resume_state(&run).unwrap(), state);
        let loaded = CheckpointMeta::from_metadata(
            &crate::model::weights::read_metadata(&run.checkpoint(Checkpoint::Last)).unwrap(),
        )
        .unwrap();
        assert_eq!(loaded.labels, ["A", "B"]);
    }
}
