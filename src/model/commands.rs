//! What the `muxmed model import`, `model forward`, `model gradcam` and `model info` commands do,
//! as library calls (`bench model` is `train::bench`: it times the training step).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{nn, Device, Kind, Tensor};

use super::muxnet::HeadInit;
use super::network::Network;
use super::weights::{self, load_strict, read_safetensors, write_safetensors};
use crate::config::Arch;

/// `muxmed model import`: reads a `torch.save` checkpoint, checks it loads strictly into
/// `arch` (with the checkpoint's own class count), and writes safetensors with metadata.
pub fn import(src: &Path, arch: &Arch, out: &Path) -> Result<String> {
    let ck = weights::read_torch_checkpoint(src)?;
    let classes = ck
        .tensors
        .iter()
        .find(|(n, _)| n == "classifier.bias")
        .map(|(_, t)| t.size()[0])
        .context("the checkpoint has no classifier.bias, so it is not a MUXNet state dict")?;
    let mut meta = BTreeMap::new();
    meta.insert("arch".to_string(), arch.to_string());
    meta.insert("num_classes".into(), classes.to_string());
    meta.insert("source_file".into(), src.display().to_string());
    meta.insert("source_sha256".into(), weights::sha256_file(src)?);
    meta.insert("state_dict".into(), ck.source_key.clone());
    meta.insert("muxmed_version".into(), env!("CARGO_PKG_VERSION").into());
    let dir = tempfile_dir(out)?;
    let tmp = dir.join(".import-check.safetensors");
    write_safetensors(&tmp, &ck.tensors, &meta)?;
    let vs = nn::VarStore::new(Device::Cpu);
    Network::build(&vs.root(), arch, classes, 0.0, HeadInit::Reference)?;
    let check = load_strict(&vs, &tmp);
    if let Err(e) = check {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{} is not a {arch} checkpoint", src.display()));
    }
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(format!(
        "imported {} tensors from `{}` of {} ({} classes) into {}",
        ck.tensors.len(),
        ck.source_key,
        src.display(),
        classes,
        out.display()
    ))
}

fn tempfile_dir(out: &Path) -> Result<std::path::PathBuf> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The network of a `model forward` / `model gradcam` job.
pub enum JobNet<'a> {
    /// An architecture with strictly loaded weights.
    Weights {
        arch: &'a Arch,
        num_classes: i64,
        weights: &'a Path,
    },
    /// A network already built and loaded (e.g. from a training checkpoint).
    Built {
        arch: Arch,
        vs: nn::VarStore,
        net: Network,
    },
}

/// What `model forward` and `model gradcam` work on: a network and the tensor `input`
/// (N,3,H,W) of a safetensors file, results written to `output`.
pub struct TensorJob<'a> {
    pub net: JobNet<'a>,
    pub input: &'a Path,
    pub output: &'a Path,
}

impl TensorJob<'_> {
    fn load(self) -> Result<(nn::VarStore, Network, Arch, Tensor)> {
        let x = input_tensor(self.input)?;
        match self.net {
            JobNet::Weights {
                arch,
                num_classes,
                weights,
            } => {
                let vs = nn::VarStore::new(Device::Cpu);
                let net = Network::build(&vs.root(), arch, num_classes, 0.0, HeadInit::Reference)?;
                load_strict(&vs, weights)?;
                Ok((vs, net, arch.clone(), x))
            }
            JobNet::Built { arch, vs, net } => {
                let x = x.to_device(vs.device());
                Ok((vs, net, arch, x))
            }
        }
    }
}

/// `muxmed model forward`: runs `input` (N,3,H,W) through the network; writes `logits` and
/// `features`, and with `stages` the fixture-named activations (`stem`, `blocks.<i>`, `head`).
pub fn forward(job: TensorJob, train_mode: bool, stages: bool) -> Result<()> {
    let output = job.output;
    let (_vs, net, arch, x) = job.load()?;
    let mut out: Vec<(String, Tensor)> = Vec::new();
    tch::no_grad(|| match &net {
        Network::MuxNet(m) => {
            let taps = m.forward_taps(&x, train_mode);
            if stages {
                out.push(("stem".into(), taps.stem));
                for (i, b) in taps.blocks.into_iter().enumerate() {
                    out.push((format!("blocks.{i}"), b));
                }
                out.push(("head".into(), taps.head));
            }
            out.push(("features".into(), taps.features));
            out.push(("logits".into(), taps.logits));
        }
        Network::DenseNet121(d) => {
            let map = d.feature_map_t(&x, train_mode);
            out.push((
                "features".into(),
                map.mean_dim([2i64, 3].as_slice(), false, map.kind()),
            ));
            out.push(("logits".into(), d.head_t(&map, train_mode)));
        }
    });
    let mut meta = BTreeMap::new();
    meta.insert("arch".into(), arch.to_string());
    meta.insert(
        "mode".into(),
        if train_mode { "train" } else { "eval" }.into(),
    );
    write_safetensors(output, &out, &meta)?;
    Ok(())
}

/// `muxmed model gradcam`: Grad-CAM of tensor `input` (N,3,H,W) for every class; writes
/// `gradcam.raw` (N, classes, h, w), `gradcam.map` (N, classes, H, W) and `logits`.
pub fn gradcam(job: TensorJob) -> Result<()> {
    let output = job.output;
    let (_vs, net, arch, x) = job.load()?;
    let g = super::gradcam::gradcam(&net, &x);
    let out = vec![
        ("gradcam.raw".to_string(), g.raw),
        ("gradcam.map".to_string(), g.map),
        ("logits".to_string(), g.logits),
    ];
    let mut meta = BTreeMap::new();
    meta.insert("arch".into(), arch.to_string());
    meta.insert("target".into(), "logit".into());
    write_safetensors(output, &out, &meta)?;
    Ok(())
}

/// The tensor `input` of a safetensors file, checked to be (N, 3, H, W).
fn input_tensor(input: &Path) -> Result<Tensor> {
    let inputs = read_safetensors(input)?;
    let x = inputs
        .get("input")
        .with_context(|| format!("{} has no tensor named `input`", input.display()))?
        .to_kind(Kind::Float);
    if x.dim() != 4 || x.size()[1] != 3 {
        bail!(
            "{}: `input` must be (N, 3, H, W), got {:?}",
            input.display(),
            x.size()
        );
    }
    Ok(x)
}

/// Parameter counts and multiply-adds for `muxmed model info`.
#[derive(Debug, serde::Serialize)]
pub struct Info {
    pub arch: String,
    pub num_classes: i64,
    pub resolution: i64,
    pub params_total: u64,
    pub params_backbone: u64,
    pub params_head: u64,
    /// Conv + linear multiply-adds per image.
    pub madds: u64,
}

pub fn info(arch: &Arch, num_classes: i64, resolution: i64) -> Result<Info> {
    let vs = nn::VarStore::new(Device::Cpu);
    Network::build(&vs.root(), arch, num_classes, 0.0, HeadInit::Reference)?;
    let count_vars = |pred: &dyn Fn(&str) -> bool| -> u64 {
        vs.variables()
            .iter()
            .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var") && pred(n))
            .map(|(_, t)| t.numel() as u64)
            .sum()
    };
    let total = count_vars(&|_| true);
    let head = count_vars(&|n| n.starts_with("classifier."));
    let counts = super::count::count_arch(arch, num_classes, resolution)?;
    if counts.total_params != total {
        bail!(
            "internal inconsistency: the built model has {total} parameters, the counter {}",
            counts.total_params
        );
    }
    Ok(Info {
        arch: arch.to_string(),
        num_classes,
        resolution,
        params_total: total,
        params_backbone: total - head,
        params_head: head,
        madds: counts.madds,
    })
}
