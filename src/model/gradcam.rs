//! Grad-CAM (Selvaraju et al., ICCV 2017) for every class at once, as the reference defines
//! it: A = the last feature map before global pooling, the score = the class logit,
//! α_k = the spatial mean of ∂score/∂A_k, raw = ReLU(Σ_k α_k A_k); the map is `raw`
//! upsampled bilinearly (align_corners = false) to the input size and min-max scaled to
//! [0, 1] per image and class (all zeros where max = min).

use tch::{Kind, Tensor};

use super::folded::FoldedNetwork;
use super::network::Network;

/// A network split at its last feature map, for Grad-CAM: the backbone up to A, and the
/// pooling and classifier after it. Both in eval mode.
pub trait CamSource {
    fn feature_map(&self, x: &Tensor) -> Tensor;
    fn logits_from_map(&self, a: &Tensor) -> Tensor;
}

impl CamSource for Network {
    fn feature_map(&self, x: &Tensor) -> Tensor {
        self.feature_map_t(x, false)
    }
    fn logits_from_map(&self, a: &Tensor) -> Tensor {
        self.logits_from_map_t(a, false)
    }
}

impl CamSource for FoldedNetwork {
    fn feature_map(&self, x: &Tensor) -> Tensor {
        FoldedNetwork::feature_map(self, x)
    }
    fn logits_from_map(&self, a: &Tensor) -> Tensor {
        FoldedNetwork::logits_from_map(self, a)
    }
}

/// Grad-CAM of a batch for every class.
#[derive(Debug)]
pub struct GradCam {
    /// (N, classes, h, w) at the feature map's resolution.
    pub raw: Tensor,
    /// (N, classes, H, W) at the input's resolution, in [0, 1].
    pub map: Tensor,
    /// (N, classes): the scores the maps explain.
    pub logits: Tensor,
}

/// Grad-CAM of `x` (N, 3, H, W) for every class, the network in eval mode. Gradients flow
/// only through the pooling and classifier: the backbone runs without autograd.
pub fn gradcam(net: &impl CamSource, x: &Tensor) -> GradCam {
    let a = tch::no_grad(|| net.feature_map(x))
        .detach()
        .set_requires_grad(true);
    let logits = net.logits_from_map(&a);
    let classes = logits.size()[1];
    let mut raws = Vec::with_capacity(classes as usize);
    for k in 0..classes {
        // Images are independent in eval mode, so the gradient of the batch sum of logit k
        // holds each image's own ∂score/∂A.
        let score = logits.select(1, k).sum(Kind::Float);
        let grad = &Tensor::run_backward(&[&score], &[&a], true, false)[0];
        let alpha = grad.mean_dim([2i64, 3].as_slice(), true, Kind::Float);
        raws.push(tch::no_grad(|| {
            (alpha * a.detach())
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                .relu()
        }));
    }
    let raw = Tensor::stack(&raws, 1);
    let (h, w) = (x.size()[2], x.size()[3]);
    let map = tch::no_grad(|| min_max(&raw.upsample_bilinear2d([h, w], false, None, None)));
    GradCam {
        raw,
        map,
        logits: logits.detach(),
    }
}

/// Min-max scaling to [0, 1] over the last two dimensions; zeros where max = min.
pub fn min_max(t: &Tensor) -> Tensor {
    let lo = t.amin([-2i64, -1].as_slice(), true);
    let hi = t.amax([-2i64, -1].as_slice(), true);
    let range = &hi - &lo;
    let flat = range.eq(0.0);
    ((t - lo) / range.masked_fill(&flat, 1.0)).masked_fill(&flat.expand_as(t), 0.0)
}
