//! The `search:` section of a pipeline: `muxmed search`'s space, algorithm, budgets and the
//! proxy training every candidate gets. Defaults live in the `Default` impls below; the YAML
//! in `pipelines/` documents every key.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Seeds the initial designs, the variation and every candidate's proxy training.
    pub seed: u64,
    /// NSGA-II population size μ (also the size of the initial design).
    pub population: usize,
    /// Offspring λ per generation.
    pub offspring: usize,
    /// Generations after the initial design.
    pub generations: u32,
    /// Two-point crossover probability.
    pub crossover: f64,
    /// Per-gene mutation probability; null = 1 / number of genes.
    pub mutation: Option<f64>,
    /// The input resolution the parameter and multiply-add objectives are counted at;
    /// null = `train.resolution`.
    pub count_resolution: Option<u32>,
    /// Constraints (Deb's constrained domination): candidates above them are never trained.
    pub max_params: Option<u64>,
    pub max_madds: Option<u64>,
    pub proxy: ProxyConfig,
    pub surrogate: SurrogateConfig,
    pub space: SpaceConfig,
}

/// MSuNAS-style accuracy surrogate: an RBF model of f1 fitted on the archive picks each
/// generation's candidates from an NSGA-II run on predicted accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurrogateConfig {
    pub enabled: bool,
    /// NSGA-II generations on the surrogate per search generation.
    pub generations: u32,
    /// Folds of the cross-validated Kendall τ reported per generation.
    pub folds: usize,
}

impl Default for SurrogateConfig {
    fn default() -> Self {
        SurrogateConfig {
            enabled: false,
            generations: 20,
            folds: 5,
        }
    }
}

/// The cheap training that scores a candidate: from scratch, on whole patients of the train
/// split, at a low resolution, for a few epochs; scored by mean AUROC on the val split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub resolution: u32,
    pub epochs: u32,
    /// Train images (whole patients are taken until this many are reached).
    pub train_images: usize,
    /// Val images (whole patients, the same subset for every candidate); null = all.
    pub val_images: Option<usize>,
    pub batch_size: usize,
    /// Peak learning rate of the pipeline's `train:` recipe (its optimiser, warmup and
    /// cosine schedule down to `train.min_lr`, loss, clipping and sampling) for the proxy.
    pub lr: f64,
    pub weight_decay: f64,
    pub drop_rate: f64,
}

/// The choice tables of the genome (see `search::space`). Per stage: the number of `sp`
/// blocks, the output width, the kernel set and expansion of the stage's `ir` block, and per
/// `sp` block its kernel, expansion and MUXConv scales. Global: SE ratio, split ratio, head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpaceConfig {
    /// Stem width (the stem conv and the `ds` block after it).
    pub stem: i64,
    /// Stride of each stage's first (`ir`) block; the length is the number of stages.
    pub strides: Vec<i64>,
    /// Stages (from the first) whose blocks use ReLU (`nre`) instead of swish.
    pub relu_stages: usize,
    /// Width choices per stage (multiples of 8).
    pub widths: Vec<Vec<i64>>,
    pub sp_depths: Vec<usize>,
    /// Kernel sets of the `ir` blocks; a dot list (`3.5.7`) is a mixed-kernel conv.
    pub ir_kernels: Vec<String>,
    pub ir_expansions: Vec<f64>,
    pub sp_kernels: Vec<i64>,
    pub sp_expansions: Vec<f64>,
    /// MUXConv scales of an `sp` block: `none` (a plain grouped depthwise conv) or a dot
    /// list as the block-string grammar writes it (`0.1`).
    pub sp_scales: Vec<String>,
    pub se_ratios: Vec<f64>,
    pub split_ratios: Vec<f64>,
    pub heads: Vec<i64>,
    /// Output width of the last `ir` block before the head.
    pub out_channels: i64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            seed: 0,
            population: 16,
            offspring: 8,
            generations: 10,
            crossover: 0.9,
            mutation: None,
            count_resolution: None,
            max_params: None,
            max_madds: None,
            proxy: ProxyConfig::default(),
            surrogate: SurrogateConfig::default(),
            space: SpaceConfig::default(),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            resolution: 128,
            epochs: 3,
            train_images: 20_000,
            val_images: Some(5_000),
            batch_size: 32,
            lr: 0.003,
            weight_decay: 0.0001,
            drop_rate: 0.1,
        }
    }
}

impl Default for SpaceConfig {
    /// Covers MUXNet-m and MUXNet-l as points (the architecture doc's table).
    fn default() -> Self {
        SpaceConfig {
            stem: 24,
            strides: vec![2, 2, 2, 1, 2],
            relu_stages: 1,
            widths: vec![
                vec![16, 24, 32],
                vec![32, 40, 48],
                vec![64, 80, 96],
                vec![96, 112, 120, 136],
                vec![128, 160, 192],
            ],
            sp_depths: vec![1, 2, 3, 4],
            ir_kernels: ["3", "5", "3.5", "3.5.7", "3.5.7.9", "3.5.7.9.11"]
                .map(String::from)
                .to_vec(),
            ir_expansions: vec![3.0, 4.0, 6.0],
            sp_kernels: vec![3, 5, 7],
            sp_expansions: vec![3.0, 4.0, 6.0],
            sp_scales: vec!["none".into(), "0.1".into()],
            se_ratios: vec![0.0, 0.25, 0.5, 0.75],
            split_ratios: vec![0.5, 0.75],
            heads: vec![1280, 1536],
            out_channels: 200,
        }
    }
}

impl SearchConfig {
    /// Checks the knobs that serde cannot; each message names its key.
    pub fn check(&self) -> Result<(), (String, String)> {
        let s = &self.space;
        let fail = |key: &str, why: &str| Err((format!("search.{key}"), why.to_string()));
        if self.population < 2 {
            return fail("population", "must be at least 2");
        }
        if self.offspring < 1 {
            return fail("offspring", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.crossover) {
            return fail("crossover", "a probability in [0, 1]");
        }
        if self.mutation.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
            return fail("mutation", "a probability in [0, 1]");
        }
        if self.proxy.epochs == 0 || self.proxy.batch_size == 0 || self.proxy.train_images == 0 {
            return fail(
                "proxy",
                "epochs, batch_size and train_images must be positive",
            );
        }
        if self.surrogate.folds < 2 {
            return fail("surrogate.folds", "must be at least 2");
        }
        if self.proxy.resolution < 16 {
            return fail("proxy.resolution", "must be at least 16");
        }
        if s.widths.len() != s.strides.len() {
            return fail(
                "space.widths",
                "needs one list of choices per stage (as many as space.strides)",
            );
        }
        if s.widths.iter().flatten().any(|w| *w < 8 || w % 8 != 0) {
            return fail(
                "space.widths",
                "every width must be a positive multiple of 8",
            );
        }
        if s.stem < 8 || s.stem % 8 != 0 || s.out_channels < 8 || s.out_channels % 8 != 0 {
            return fail("space.stem", "must be positive multiples of 8");
        }
        if s.sp_depths.contains(&0) {
            return fail("space.sp_depths", "every stage has at least one sp block");
        }
        let lists: [(&str, usize); 11] = [
            ("space.strides", s.strides.len()),
            ("space.sp_depths", s.sp_depths.len()),
            ("space.ir_kernels", s.ir_kernels.len()),
            ("space.ir_expansions", s.ir_expansions.len()),
            ("space.sp_kernels", s.sp_kernels.len()),
            ("space.sp_expansions", s.sp_expansions.len()),
            ("space.sp_scales", s.sp_scales.len()),
            ("space.se_ratios", s.se_ratios.len()),
            ("space.split_ratios", s.split_ratios.len()),
            ("space.heads", s.heads.len()),
            (
                "space.widths",
                s.widths.iter().map(Vec::len).min().unwrap_or(0),
            ),
        ];
        for (key, n) in lists {
            if n == 0 {
                return fail(key, "needs at least one choice");
            }
        }
        Ok(())
    }
}
