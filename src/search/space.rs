//! The search space: a fixed-length genome of categorical genes (indices into the choice
//! tables of `search.space`) and its decoding into the authors' block strings.
//!
//! Layout: three global genes (SE ratio, split ratio, head width), then per stage
//! `[sp depth, width, ir kernels, ir expansion]` followed by `[sp kernel, sp expansion,
//! sp scales]` for each of the `max(sp_depths)` slots; slots past the stage's depth are
//! inactive and decoding sets them to 0, so two genomes that differ only there are one
//! candidate. The network is the MUXNet skeleton of the architecture doc: stem, a
//! `ds` block, per stage one strided `ir` block followed by `sp` blocks at constant width,
//! a final `ir` block, the head.

use rand::Rng;

use crate::config::search::SpaceConfig;
use crate::model::spec::{decode_block, split_channels, Act, ArchSpec, BlockArgs, BlockType};

/// Genes before the per-stage groups.
const GLOBAL_GENES: usize = 3;
const STAGE_GENES: usize = 4;
const SLOT_GENES: usize = 3;

/// One decoded, valid candidate: its canonical genome and its architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub genome: Vec<usize>,
    pub spec: ArchSpec,
}

impl Candidate {
    /// The phenotype: every block string and the head width. Candidates are deduplicated on
    /// it, not on the genome.
    pub fn key(&self) -> String {
        phenotype_key(&self.spec.arch_def, self.spec.num_features)
    }
}

/// The phenotype key: every block string and the head width (archive rows use it too).
pub fn phenotype_key(arch_def: &[Vec<String>], head: i64) -> String {
    let blocks: Vec<&str> = arch_def.iter().flatten().map(String::as_str).collect();
    format!("{} head{head}", blocks.join(" "))
}

/// Why a genome does not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    #[error("gene {gene} is {value}, but it has only {choices} choices")]
    OutOfRange {
        gene: usize,
        value: usize,
        choices: usize,
    },
    #[error("genome has {got} genes, the space has {want}")]
    Length { got: usize, want: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("not in the search space: {0}")]
    NotEncodable(String),
}

/// The search space built from its config; `resolution` is the input size the network is
/// counted at (a -1 MUXConv scale needs even feature maps there).
#[derive(Debug, Clone)]
pub struct Space {
    pub cfg: SpaceConfig,
    pub resolution: i64,
    slots: usize,
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

impl Space {
    pub fn new(cfg: SpaceConfig, resolution: i64) -> Self {
        let slots = cfg.sp_depths.iter().copied().max().unwrap_or(1);
        Space {
            cfg,
            resolution,
            slots,
        }
    }

    pub fn stages(&self) -> usize {
        self.cfg.strides.len()
    }

    fn stage_base(&self, s: usize) -> usize {
        GLOBAL_GENES + s * (STAGE_GENES + SLOT_GENES * self.slots)
    }

    /// Number of choices of every gene.
    pub fn cardinalities(&self) -> Vec<usize> {
        let c = &self.cfg;
        let mut out = vec![c.se_ratios.len(), c.split_ratios.len(), c.heads.len()];
        for s in 0..self.stages() {
            out.extend([
                c.sp_depths.len(),
                c.widths[s].len(),
                c.ir_kernels.len(),
                c.ir_expansions.len(),
            ]);
            for _ in 0..self.slots {
                out.extend([c.sp_kernels.len(), c.sp_expansions.len(), c.sp_scales.len()]);
            }
        }
        out
    }

    pub fn genes(&self) -> usize {
        GLOBAL_GENES + self.stages() * (STAGE_GENES + SLOT_GENES * self.slots)
    }

    /// A uniformly drawn genome (not yet decoded).
    pub fn random_genome(&self, rng: &mut impl Rng) -> Vec<usize> {
        self.cardinalities()
            .into_iter()
            .map(|n| rng.random_range(0..n))
            .collect()
    }

    /// The all-smallest and all-largest corners (choice tables are listed smallest first).
    pub fn corner(&self, largest: bool) -> Vec<usize> {
        self.cardinalities()
            .into_iter()
            .map(|n| if largest { n - 1 } else { 0 })
            .collect()
    }

    fn scale_index_none(&self) -> Option<usize> {
        self.cfg.sp_scales.iter().position(|s| s == "none")
    }

    /// Decodes a genome into a candidate, repairing what the grammar allows: inactive slots
    /// are zeroed, and an `sp` block whose MUXConv scales cannot split its channels (a +1
    /// scale needs each channel group divisible by 4, a -1 scale needs even feature maps)
    /// falls back to `none` when the space has it. Anything else invalid is an error.
    pub fn decode(&self, genome: &[usize]) -> Result<Candidate, SpaceError> {
        self.check_genome(genome)?;
        let c = &self.cfg;
        let mut g = genome.to_vec();
        let se = c.se_ratios[g[0]];
        let sr = c.split_ratios[g[1]];
        let head = c.heads[g[2]];
        let se_opt = |ratio: f64| {
            if ratio > 0.0 {
                format!("_se{}", fmt_num(ratio))
            } else {
                String::new()
            }
        };
        let mut arch_def = vec![vec![format!("ds_r1_k3_s1_e1_c{}_se0.25_nre", c.stem)]];
        // The stem halves the input.
        let mut size = self.resolution / 2;
        for s in 0..self.stages() {
            let b = self.stage_base(s);
            let depth = c.sp_depths[g[b]];
            let width = c.widths[s][g[b + 1]];
            let act = if s < c.relu_stages { "_nre" } else { "" };
            let stride = c.strides[s];
            size = (size + stride - 1) / stride;
            let mut stage = vec![format!(
                "ir_r1_k{}_s{stride}_e{}_c{width}{}{act}",
                c.ir_kernels[g[b + 2]],
                fmt_num(c.ir_expansions[g[b + 3]]),
                se_opt(se)
            )];
            for slot in 0..self.slots {
                let o = b + STAGE_GENES + slot * SLOT_GENES;
                if slot >= depth {
                    g[o..o + SLOT_GENES].fill(0);
                    continue;
                }
                let mid = ((width as f64 * sr) as i64 as f64 * c.sp_expansions[g[o + 1]]) as i64;
                let mut scales = c.sp_scales[g[o + 2]].as_str();
                if scales != "none" && !scales_fit(scales, mid, size) {
                    let none = self.scale_index_none().ok_or_else(|| {
                        SpaceError::Invalid(format!(
                            "stage {}: MUXConv scales {scales} cannot split {mid} channels at {size}x{size}, and the space has no `none`",
                            s + 1
                        ))
                    })?;
                    g[o + 2] = none;
                    scales = "none";
                }
                let spatial = if scales == "none" {
                    "_dwg2".to_string()
                } else {
                    format!("_sc{scales}")
                };
                stage.push(format!(
                    "sp_r1_k{}_s1_e{}_c{width}{}_sr{}_sg2{spatial}{act}",
                    c.sp_kernels[g[o]],
                    fmt_num(c.sp_expansions[g[o + 1]]),
                    se_opt(se),
                    fmt_num(sr)
                ));
            }
            arch_def.push(stage);
        }
        arch_def.push(vec![format!(
            "ir_r1_k3_s1_e6_c{}{}",
            c.out_channels,
            se_opt(se)
        )]);
        let spec = ArchSpec {
            name: None,
            arch_def,
            stem_size: c.stem,
            num_features: head,
            channel_multiplier: 1.0,
            depth_multiplier: 1.0,
            num_classes: None,
            input_resolution: Some(self.resolution),
            act_default: Act::Swish,
        };
        spec.plan()
            .map_err(|e| SpaceError::Invalid(e.to_string()))?;
        Ok(Candidate { genome: g, spec })
    }

    fn check_genome(&self, genome: &[usize]) -> Result<(), SpaceError> {
        let card = self.cardinalities();
        if genome.len() != card.len() {
            return Err(SpaceError::Length {
                got: genome.len(),
                want: card.len(),
            });
        }
        for (gene, (&value, &choices)) in genome.iter().zip(&card).enumerate() {
            if value >= choices {
                return Err(SpaceError::OutOfRange {
                    gene,
                    value,
                    choices,
                });
            }
        }
        Ok(())
    }

    /// The genes of one sp block slot: kernel, expansion and MUXConv scales.
    fn encode_sp(&self, sp: &BlockArgs, g: &mut [usize]) -> Result<(), SpaceError> {
        let c = &self.cfg;
        let find = |what: String, i: Option<usize>| i.ok_or(SpaceError::NotEncodable(what));
        g[0] = find(
            format!("sp kernel {:?}", sp.kernels),
            match sp.kernels.as_slice() {
                [k] => c.sp_kernels.iter().position(|x| x == k),
                _ => None,
            },
        )?;
        g[1] = find(
            format!("sp expansion {}", sp.exp_ratio),
            c.sp_expansions.iter().position(|e| *e == sp.exp_ratio),
        )?;
        let sc = sp.scales.as_ref().map_or("none".to_string(), |v| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(".")
        });
        g[2] = find(
            format!("scales {sc}"),
            c.sp_scales.iter().position(|x| *x == sc),
        )?;
        Ok(())
    }

    /// The genome of an architecture, when the space holds it (MUXNet-m and -l with the
    /// default space): the inverse of [`Space::decode`].
    pub fn encode(&self, spec: &ArchSpec) -> Result<Vec<usize>, SpaceError> {
        let no = |why: String| SpaceError::NotEncodable(why);
        let c = &self.cfg;
        let blocks: Vec<&String> = spec.arch_def.iter().flatten().collect();
        let parsed = blocks
            .iter()
            .map(|b| decode_block(b).map_err(|e| no(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if spec.stem_size != c.stem
            || spec.channel_multiplier != 1.0
            || spec.depth_multiplier != 1.0
        {
            return Err(no("stem or multipliers differ from the space's".into()));
        }
        let find = |what: &str, i: Option<usize>| i.ok_or_else(|| no(what.to_string()));
        let mut g = vec![0; self.genes()];
        g[2] = find(
            &format!("head {}", spec.num_features),
            c.heads.iter().position(|h| *h == spec.num_features),
        )?;
        // Per stage: an ir block then sp blocks; the first and last blocks are fixed.
        let (first, rest) = parsed.split_first().ok_or_else(|| no("no blocks".into()))?;
        if !matches!(first.block_type, BlockType::Ds { .. }) {
            return Err(no("the first block is not the ds block".into()));
        }
        let body = &rest[..rest.len().saturating_sub(1)];
        let mut stage_starts: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, b)| b.block_type == BlockType::Ir)
            .map(|(i, _)| i)
            .collect();
        if stage_starts.len() != self.stages() || stage_starts.first() != Some(&0) {
            return Err(no(format!(
                "{} stages of one ir block and sp blocks, the space has {}",
                stage_starts.len(),
                self.stages()
            )));
        }
        stage_starts.push(body.len());
        let se = body[0].se_ratio.unwrap_or(0.0);
        g[0] = find(
            &format!("SE ratio {se}"),
            c.se_ratios.iter().position(|r| *r == se),
        )?;
        let mut sr = None;
        for s in 0..self.stages() {
            let b = self.stage_base(s);
            let (ir, sps) = (
                &body[stage_starts[s]],
                &body[stage_starts[s] + 1..stage_starts[s + 1]],
            );
            g[b] = find(
                &format!("stage {} with {} sp blocks", s + 1, sps.len()),
                c.sp_depths.iter().position(|d| *d == sps.len()),
            )?;
            g[b + 1] = find(
                &format!("stage {} width {}", s + 1, ir.out_chs),
                c.widths[s].iter().position(|w| *w == ir.out_chs),
            )?;
            let ks = ir
                .kernels
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(".");
            g[b + 2] = find(
                &format!("ir kernels {ks}"),
                c.ir_kernels.iter().position(|k| *k == ks),
            )?;
            g[b + 3] = find(
                &format!("ir expansion {}", ir.exp_ratio),
                c.ir_expansions.iter().position(|e| *e == ir.exp_ratio),
            )?;
            for (slot, sp) in sps.iter().enumerate() {
                let o = b + STAGE_GENES + slot * SLOT_GENES;
                sr.get_or_insert(sp.split_ratio);
                if sr != Some(sp.split_ratio) || sp.se_ratio.unwrap_or(0.0) != se {
                    return Err(no("split and SE ratios differ between blocks".into()));
                }
                self.encode_sp(sp, &mut g[o..o + SLOT_GENES])?;
            }
        }
        let sr = sr.ok_or_else(|| no("no sp blocks".into()))?;
        g[1] = find(
            &format!("split ratio {sr}"),
            c.split_ratios.iter().position(|r| *r == sr),
        )?;
        let cand = self.decode(&g)?;
        let flat = |a: &ArchSpec| a.arch_def.iter().flatten().cloned().collect::<Vec<_>>();
        if flat(&cand.spec) != flat(spec) {
            return Err(no(format!(
                "decodes to different blocks (first difference at {:?})",
                flat(&cand.spec)
                    .iter()
                    .zip(flat(spec))
                    .find(|(a, b)| *a != b)
            )));
        }
        Ok(cand.genome)
    }
}

/// Whether MUXConv `scales` (a dot list) can split `mid` channels at a `size`² feature map.
fn scales_fit(scales: &str, mid: i64, size: i64) -> bool {
    let sc: Vec<i64> = scales.split('.').filter_map(|x| x.parse().ok()).collect();
    let parts = split_channels(mid, sc.len());
    sc.iter().zip(parts).all(|(s, ch)| match s.signum() {
        1 => ch % 4 == 0 && ch >= 4,
        -1 => size % 2 == 0,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn space() -> Space {
        Space::new(SpaceConfig::default(), 224)
    }

    #[test]
    fn muxnet_m_and_l_round_trip() {
        let sp = space();
        for spec in [ArchSpec::muxnet_m(), ArchSpec::muxnet_l()] {
            let g = sp.encode(&spec).unwrap();
            let back = sp.decode(&g).unwrap();
            let flat = |a: &ArchSpec| a.arch_def.iter().flatten().cloned().collect::<Vec<_>>();
            assert_eq!(flat(&back.spec), flat(&spec));
            assert_eq!(back.spec.num_features, spec.num_features);
            assert_eq!(back.genome, g);
            assert_eq!(sp.encode(&back.spec).unwrap(), g);
        }
    }

    #[test]
    fn random_genomes_round_trip_and_inactive_genes_do_not_matter() {
        let sp = space();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let g = sp.random_genome(&mut rng);
            let c = sp.decode(&g).unwrap();
            assert_eq!(sp.encode(&c.spec).unwrap(), c.genome);
            assert_eq!(sp.decode(&c.genome).unwrap(), c);
        }
    }

    #[test]
    fn impossible_scales_are_repaired_to_none() {
        // width 16, sr 0.5, e3: 24 mid channels split 12/12; 12 % 4 == 0 fits. Width 16,
        // sr 0.75, e3: 36 -> 18/18 does not fit a +1 scale.
        assert!(scales_fit("0.1", 24, 56));
        assert!(!scales_fit("0.1", 36, 56));
        assert!(!scales_fit("-1.0", 24, 7));
        let mut cfg = SpaceConfig::default();
        cfg.widths[0] = vec![16];
        cfg.split_ratios = vec![0.75];
        cfg.sp_expansions = vec![3.0];
        let sp = Space::new(cfg, 224);
        let mut g = sp.corner(true);
        let o = sp.stage_base(0) + STAGE_GENES;
        g[o + 2] = 1;
        let c = sp.decode(&g).unwrap();
        assert_eq!(c.genome[o + 2], 0);
        assert!(
            c.spec.arch_def[1][1].ends_with("_dwg2_nre"),
            "{:?}",
            c.spec.arch_def[1]
        );
    }

    #[test]
    fn bad_genomes_are_named() {
        let sp = space();
        assert!(matches!(sp.decode(&[0, 1]), Err(SpaceError::Length { .. })));
        let mut g = sp.corner(false);
        g[2] = 9;
        assert_eq!(
            sp.decode(&g),
            Err(SpaceError::OutOfRange {
                gene: 2,
                value: 9,
                choices: 2
            })
        );
    }
}
