//! Parameters and multiply-adds of a MUXNet (from its plan) or of DenseNet-121, computed
//! without building the network.
//! MAdds count conv and linear multiply-accumulates per image (BatchNorm, activations, SE
//! gating and residual adds excluded), the convention of the architecture doc's section 8.

use super::spec::{split_channels, ArchSpec, BlockType, SpecError, DENSENET121};
use crate::config::Arch;

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    pub params: u64,
    pub madds: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    pub layers: Vec<Layer>,
    pub total_params: u64,
    pub head_params: u64,
    pub madds: u64,
}

impl Counts {
    pub fn backbone_params(&self) -> u64 {
        self.total_params - self.head_params
    }
}

fn out_size(h: i64, k: i64, s: i64) -> i64 {
    let p = ((s - 1) + (k - 1)) / 2;
    (h + 2 * p - k) / s + 1
}

struct Counter {
    layers: Vec<Layer>,
}

impl Counter {
    /// A conv at input size `h` (square); returns the output size.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: String,
        cin: i64,
        cout: i64,
        k: i64,
        s: i64,
        groups: i64,
        h: i64,
        bias: bool,
    ) -> i64 {
        let ho = out_size(h, k, s);
        let w = (cout * (cin / groups) * k * k) as u64;
        self.layers.push(Layer {
            name,
            params: w + if bias { cout as u64 } else { 0 },
            madds: w * (ho * ho) as u64,
        });
        ho
    }
    fn bn(&mut self, name: String, c: i64) {
        self.layers.push(Layer {
            name,
            params: 2 * c as u64,
            madds: 0,
        });
    }
    /// The spatial conv of a block: single, mixed-kernel or MUXConv.
    #[allow(clippy::too_many_arguments)]
    fn spatial(
        &mut self,
        name: &str,
        c: i64,
        kernels: &[i64],
        s: i64,
        groups: Option<i64>,
        scales: Option<&[i64]>,
        h: i64,
    ) -> i64 {
        if let Some(sc) = scales {
            let splits = split_channels(c, sc.len());
            let mut ho = h;
            for (i, (&ci, &scale)) in splits.iter().zip(sc).enumerate() {
                let k = if kernels.len() == 1 {
                    kernels[0]
                } else {
                    kernels[i]
                };
                ho = match scale.signum() {
                    -1 => {
                        self.conv(
                            format!("{name}.convs.{i}.1"),
                            ci * 4,
                            ci * 4,
                            k,
                            s,
                            ci * 4,
                            h / 2,
                            false,
                        ) * 2
                    }
                    0 => self.conv(format!("{name}.convs.{i}"), ci, ci, k, s, ci, h, false),
                    _ => {
                        self.conv(
                            format!("{name}.convs.{i}.1"),
                            ci / 4,
                            ci / 4,
                            k,
                            s,
                            ci / 4,
                            h * 2,
                            false,
                        ) / 2
                    }
                };
            }
            ho
        } else if kernels.len() > 1 {
            let n = kernels.len();
            let splits = split_channels(c, n);
            let g = match groups {
                None => splits.clone(),
                Some(g) if g > 1 => split_channels(g, n),
                Some(_) => vec![1; n],
            };
            let mut ho = h;
            for j in 0..n {
                ho = self.conv(
                    format!("{name}.{j}"),
                    splits[j],
                    splits[j],
                    kernels[j],
                    s,
                    g[j],
                    h,
                    false,
                );
            }
            ho
        } else {
            self.conv(
                name.to_string(),
                c,
                c,
                kernels[0],
                s,
                groups.unwrap_or(c),
                h,
                false,
            )
        }
    }
}

/// Counts for `spec` with a `num_classes` head at a square `resolution`.
pub fn count(spec: &ArchSpec, num_classes: i64, resolution: i64) -> Result<Counts, SpecError> {
    let plan = spec.plan()?;
    let mut c = Counter { layers: vec![] };
    let stem = spec.stem_channels();
    let mut h = c.conv("conv_stem".into(), 3, stem, 3, 2, 1, resolution, false);
    c.bn("bn1".into(), stem);
    for (i, stage) in plan.iter().enumerate() {
        for (j, b) in stage.iter().enumerate() {
            let p = format!("blocks.{i}.{j}");
            let a = &b.args;
            let scales = a.scales.as_deref();
            let mid = b.mid_chs();
            let se = |c: &mut Counter| {
                if let Some(r) = b.se_chs() {
                    c.conv(format!("{p}.se.conv_reduce"), mid, r, 1, 1, 1, 1, true);
                    c.conv(format!("{p}.se.conv_expand"), r, mid, 1, 1, 1, 1, true);
                }
            };
            match a.block_type {
                BlockType::Ds { .. } => {
                    h = c.spatial(
                        &format!("{p}.conv_dw"),
                        b.in_chs,
                        &a.kernels,
                        b.stride,
                        None,
                        scales,
                        h,
                    );
                    c.bn(format!("{p}.bn1"), b.in_chs);
                    se(&mut c);
                    c.conv(
                        format!("{p}.conv_pw"),
                        b.in_chs,
                        b.out_chs,
                        1,
                        1,
                        1,
                        h,
                        false,
                    );
                    c.bn(format!("{p}.bn2"), b.out_chs);
                }
                BlockType::Ir | BlockType::Sp => {
                    let (cin, cout, groups) = if a.block_type == BlockType::Sp {
                        (b.split_chs(), b.split_chs(), Some(mid / a.dw_group_factor))
                    } else {
                        (b.in_chs, b.out_chs, None)
                    };
                    c.conv(format!("{p}.conv_pw"), cin, mid, 1, 1, 1, h, false);
                    c.bn(format!("{p}.bn1"), mid);
                    h = c.spatial(
                        &format!("{p}.conv_dw"),
                        mid,
                        &a.kernels,
                        b.stride,
                        groups,
                        scales,
                        h,
                    );
                    c.bn(format!("{p}.bn2"), mid);
                    se(&mut c);
                    c.conv(format!("{p}.conv_pwl"), mid, cout, 1, 1, 1, h, false);
                    c.bn(format!("{p}.bn3"), cout);
                }
            }
        }
    }
    let last = spec.last_channels()?;
    c.conv(
        "conv_head".into(),
        last,
        spec.head_channels(),
        1,
        1,
        1,
        h,
        false,
    );
    c.bn("bn2".into(), spec.head_channels());
    let head_params = (spec.head_channels() * num_classes + num_classes) as u64;
    c.layers.push(Layer {
        name: "classifier".into(),
        params: head_params,
        madds: (spec.head_channels() * num_classes) as u64,
    });
    Ok(Counts {
        total_params: c.layers.iter().map(|l| l.params).sum(),
        madds: c.layers.iter().map(|l| l.madds).sum(),
        head_params,
        layers: c.layers,
    })
}

/// Counts for any architecture muxmed builds.
pub fn count_arch(arch: &Arch, num_classes: i64, resolution: i64) -> Result<Counts, SpecError> {
    match arch {
        Arch::Densenet121 => Ok(count_densenet121(num_classes, resolution)),
        other => count(&ArchSpec::of(other)?, num_classes, resolution),
    }
}

/// DenseNet-121 as `model::densenet` builds it (torchvision's layout): 7x7/2 stem, 3x3/2 max
/// pool, four dense blocks joined by 1x1-conv + 2x2 average-pool transitions, global pool.
pub fn count_densenet121(num_classes: i64, resolution: i64) -> Counts {
    let d = DENSENET121;
    let mut c = Counter { layers: vec![] };
    let mut h = c.conv(
        "features.conv0".into(),
        3,
        d.init_features,
        7,
        2,
        1,
        resolution,
        false,
    );
    c.bn("features.norm0".into(), d.init_features);
    h = (h + 2 - 3) / 2 + 1; // max pool 3x3, stride 2, padding 1
    let mut ch = d.init_features;
    let mid = d.bn_size * d.growth;
    for (i, &n) in d.blocks.iter().enumerate() {
        for j in 0..n {
            let p = format!("features.denseblock{}.denselayer{}", i + 1, j + 1);
            let cin = ch + j * d.growth;
            c.bn(format!("{p}.norm1"), cin);
            c.conv(format!("{p}.conv1"), cin, mid, 1, 1, 1, h, false);
            c.bn(format!("{p}.norm2"), mid);
            c.conv(format!("{p}.conv2"), mid, d.growth, 3, 1, 1, h, false);
        }
        ch += n * d.growth;
        if i + 1 < d.blocks.len() {
            let p = format!("features.transition{}", i + 1);
            c.bn(format!("{p}.norm"), ch);
            c.conv(format!("{p}.conv"), ch, ch / 2, 1, 1, 1, h, false);
            ch /= 2;
            h /= 2; // average pool 2x2, stride 2
        }
    }
    c.bn("features.norm5".into(), ch);
    let head_params = (ch * num_classes + num_classes) as u64;
    c.layers.push(Layer {
        name: "classifier".into(),
        params: head_params,
        madds: (ch * num_classes) as u64,
    });
    Counts {
        total_params: c.layers.iter().map(|l| l.params).sum(),
        madds: c.layers.iter().map(|l| l.madds).sum(),
        head_params,
        layers: c.layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision's DenseNet-121 with a 14-class head (architecture doc, section 8):
    /// 6.968M parameters (6,953,856 in the backbone, the figure torchvision's model card
    /// implies: 7,978,856 − 1024·1000 − 1000), 2833M multiply-adds at 224x224.
    #[test]
    fn densenet121_counts_match_the_reference() {
        let c14 = count_densenet121(14, 224);
        assert_eq!(c14.backbone_params(), 7_978_856 - 1024 * 1000 - 1000);
        assert_eq!(c14.total_params, 6_953_856 + 1024 * 14 + 14);
        assert_eq!((c14.madds as f64 / 1e6).round(), 2833.0);
        let c1000 = count_densenet121(1000, 224);
        assert_eq!(c1000.total_params, 7_978_856);
        assert_eq!((c1000.madds as f64 / 1e6).round(), 2834.0);
    }

    /// Reference counts from the authors' code (architecture doc, section 8).
    #[test]
    fn muxnet_m_counts_match_the_reference() {
        let m = ArchSpec::muxnet_m();
        let c14 = count(&m, 14, 224).unwrap();
        assert_eq!(c14.total_params, 2_091_210);
        assert_eq!((c14.madds as f64 / 1e5).round() / 10.0, 215.5);
        let c1000 = count(&m, 1000, 224).unwrap();
        assert_eq!((c1000.total_params as f64 / 1e3).round() / 1e3, 3.354);
        assert_eq!((c1000.backbone_params() as f64 / 1e3).round() / 1e3, 2.073);
        assert_eq!((c1000.madds as f64 / 1e5).round() / 10.0, 216.8);
    }

    #[test]
    fn muxnet_l_counts_match_the_reference() {
        let l = ArchSpec::muxnet_l();
        let c1000 = count(&l, 1000, 224).unwrap();
        assert_eq!((c1000.total_params as f64 / 1e3).round() / 1e3, 4.041);
        assert_eq!((c1000.madds as f64 / 1e5).round() / 10.0, 316.5);
        let c14 = count(&l, 14, 224).unwrap();
        assert_eq!((c14.total_params as f64 / 1e3).round() / 1e3, 2.526);
        assert_eq!((c14.madds as f64 / 1e5).round() / 10.0, 314.9);
    }
}

#[cfg(test)]
mod layer_table {
    use super::*;

    /// Every conv and linear layer of MUXNet-m (1000 classes) against the per-layer table
    /// measured on the authors' code (`../shared/docs/muxnet_m_layers.tsv`).
    #[test]
    fn every_layer_matches_the_reference_table() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/docs/muxnet_m_layers.tsv"
        );
        let text = std::fs::read_to_string(path).expect("reference table in ../shared/docs");
        let ours = count(&ArchSpec::muxnet_m(), 1000, 224).unwrap();
        let ours: Vec<&Layer> = ours
            .layers
            .iter()
            .filter(|l| {
                !l.name.ends_with("bn1") && !l.name.ends_with("bn2") && !l.name.ends_with("bn3")
            })
            .collect();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect())
            .collect();
        assert_eq!(rows.len(), ours.len());
        for (row, layer) in rows.iter().zip(&ours) {
            assert_eq!(row[0], layer.name);
            assert_eq!(
                row[5].parse::<u64>().unwrap(),
                layer.params,
                "{}",
                layer.name
            );
            assert_eq!(
                row[6].parse::<u64>().unwrap(),
                layer.madds,
                "{}",
                layer.name
            );
        }
    }
}
