//! DenseNet-121 (Huang et al. 2017), CheXNet's architecture (Rajpurkar et al. 2017), as the
//! baseline. Module paths equal torchvision's current state-dict keys (`features.conv0`,
//! `features.denseblock1.denselayer1.norm1`, ..., `classifier`); [`remap_torchvision_key`]
//! reads the older published naming (`norm.1`, `conv.2`). The head pools globally, so any
//! input size the config accepts works (tch's own DenseNet pools with a fixed 7x7 window).

use tch::nn::{self, Module};
use tch::Tensor;

use super::layers::{Conv, BN_EPS};
use super::layout::{self, MemoryFormat};
use super::spec::DENSENET121;

const GROWTH: i64 = DENSENET121.growth;
const BN_SIZE: i64 = DENSENET121.bn_size;
const INIT_FEATURES: i64 = DENSENET121.init_features;
const BLOCKS: [i64; 4] = DENSENET121.blocks;

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Conv {
    Conv::new(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding,
            bias: false,
            ws_init: nn::Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        },
    )
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            eps: BN_EPS,
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// norm1 → relu → conv1 (1x1, 4·growth) → norm2 → relu → conv2 (3x3, growth), concatenated
/// to the input.
#[derive(Debug)]
pub(super) struct DenseLayer {
    pub(super) norm1: nn::BatchNorm,
    pub(super) conv1: Conv,
    pub(super) norm2: nn::BatchNorm,
    pub(super) conv2: Conv,
}

impl DenseLayer {
    fn new(p: nn::Path, cin: i64) -> Self {
        let mid = BN_SIZE * GROWTH;
        DenseLayer {
            norm1: bn(&p / "norm1", cin),
            conv1: conv(&p / "conv1", cin, mid, 1, 1, 0),
            norm2: bn(&p / "norm2", mid),
            conv2: conv(&p / "conv2", mid, GROWTH, 3, 1, 1),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply_t(&self.norm1, train).relu().apply(&self.conv1);
        let y = y.apply_t(&self.norm2, train).relu().apply(&self.conv2);
        Tensor::cat(&[x, &y], 1)
    }
}

/// The stem's 3x3 max pool, stride 2 (after conv0, norm0 and ReLU).
pub(super) fn stem_pool(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
}

/// A transition's 2x2 average pool, stride 2 (after its norm, ReLU and 1x1 conv).
pub(super) fn transition_pool(x: &Tensor) -> Tensor {
    x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)
}

/// norm → relu → 1x1 conv halving the channels → 2x2 average pool.
#[derive(Debug)]
pub(super) struct Transition {
    pub(super) norm: nn::BatchNorm,
    pub(super) conv: Conv,
}

#[derive(Debug)]
pub struct DenseNet121 {
    pub(super) conv0: Conv,
    pub(super) norm0: nn::BatchNorm,
    pub(super) blocks: Vec<Vec<DenseLayer>>,
    pub(super) transitions: Vec<Transition>,
    pub(super) norm5: nn::BatchNorm,
    pub(super) classifier: nn::Linear,
    pub(super) drop_rate: f64,
}

impl DenseNet121 {
    pub fn new(p: &nn::Path, num_classes: i64, drop_rate: f64) -> Self {
        let f = p / "features";
        let mut c = INIT_FEATURES;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (i, &n) in BLOCKS.iter().enumerate() {
            let bp = &f / format!("denseblock{}", i + 1);
            blocks.push(
                (0..n)
                    .map(|j| DenseLayer::new(&bp / format!("denselayer{}", j + 1), c + j * GROWTH))
                    .collect(),
            );
            c += n * GROWTH;
            if i + 1 < BLOCKS.len() {
                let tp = &f / format!("transition{}", i + 1);
                transitions.push(Transition {
                    norm: bn(&tp / "norm", c),
                    conv: conv(&tp / "conv", c, c / 2, 1, 1, 0),
                });
                c /= 2;
            }
        }
        DenseNet121 {
            conv0: conv(&f / "conv0", 3, INIT_FEATURES, 7, 2, 3),
            norm0: bn(&f / "norm0", INIT_FEATURES),
            blocks,
            transitions,
            norm5: bn(&f / "norm5", c),
            classifier: nn::linear(p / "classifier", c, num_classes, Default::default()),
            drop_rate,
        }
    }

    /// The memory format of the weights (see [`super::layout::apply`]).
    pub fn memory_format(&self) -> MemoryFormat {
        layout::format_of(self.conv0.weight())
    }

    /// The last feature map before pooling: after norm5 and ReLU (N, 1024, H/32, W/32).
    pub fn feature_map_t(&self, x: &Tensor, train: bool) -> Tensor {
        let stem = layout::to_format(x, self.memory_format())
            .apply(&self.conv0)
            .apply_t(&self.norm0, train)
            .relu();
        let mut y = stem_pool(&stem);
        for (i, block) in self.blocks.iter().enumerate() {
            for layer in block {
                y = layer.forward_t(&y, train);
            }
            if let Some(t) = self.transitions.get(i) {
                y = transition_pool(&y.apply_t(&t.norm, train).relu().apply(&t.conv));
            }
        }
        y.apply_t(&self.norm5, train).relu()
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head_t(&self.feature_map_t(x, train), train)
    }

    /// Global average pooling and the classifier on a feature map from [`Self::feature_map_t`].
    pub fn head_t(&self, map: &Tensor, train: bool) -> Tensor {
        let f = map.mean_dim([2i64, 3].as_slice(), false, map.kind());
        self.classifier
            .forward(&f.dropout(self.drop_rate, train && self.drop_rate > 0.0))
    }
}

/// torchvision's published DenseNet checkpoints name dense-layer modules `norm.1`, `relu.1`,
/// `conv.1`, `norm.2`, ...; its loader joins them into `norm1`, `conv1`, ... Returns the
/// current name for such a key, `None` for any other.
pub fn remap_torchvision_key(key: &str) -> Option<String> {
    let (head, rest) = key.split_once(".denselayer")?;
    let (layer, tail) = rest.split_once('.')?;
    let mut parts = tail.splitn(3, '.');
    let (module, index, param) = (parts.next()?, parts.next()?, parts.next()?);
    let ok_module = matches!(module, "norm" | "relu" | "conv");
    let ok_index = matches!(index, "1" | "2");
    let ok_param = matches!(param, "weight" | "bias" | "running_mean" | "running_var");
    (ok_module && ok_index && ok_param && layer.chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("{head}.denselayer{layer}.{module}{index}.{param}"))
}

#[cfg(test)]
mod tests {
    use super::remap_torchvision_key as remap;

    #[test]
    fn old_torchvision_names_are_joined() {
        assert_eq!(
            remap("features.denseblock1.denselayer12.norm.1.weight").as_deref(),
            Some("features.denseblock1.denselayer12.norm1.weight")
        );
        assert_eq!(
            remap("features.denseblock4.denselayer3.conv.2.weight").as_deref(),
            Some("features.denseblock4.denselayer3.conv2.weight")
        );
        assert_eq!(
            remap("features.denseblock4.denselayer3.norm.2.running_var").as_deref(),
            Some("features.denseblock4.denselayer3.norm2.running_var")
        );
        assert_eq!(remap("features.denseblock1.denselayer1.norm1.weight"), None);
        assert_eq!(remap("features.transition1.norm.weight"), None);
        assert_eq!(remap("classifier.weight"), None);
    }
}
