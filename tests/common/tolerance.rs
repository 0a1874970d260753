//! Float32 tolerances from rounding-error analysis, never from what one CPU happened to give.
//!
//! libtorch, oneDNN and MKL pick kernels by CPU capability (AVX-512, AVX2, ...), so two
//! correct computations of the same network sum the same products in another order. The
//! bound for that, used by every model test:
//!
//! - Each rounding error of a float32 sum is at most u·|partial sum| (u = 2⁻²⁴). In these
//!   networks the partial sums stay of the order of the layer's outputs (BatchNorm keeps
//!   activations O(1); weights have random signs), so the n errors of an n-term sum have
//!   independent signs and add to u·√n·|output| in standard deviation (the probabilistic
//!   analysis of Higham & Mary, SIAM J. Sci. Comput. 41 (2019) A2815).
//! - Layers in sequence add independent relative errors, so over a path of `depth`
//!   reductions of at most `fan_in` terms the relative error has standard deviation at most
//!   u·√(depth·fan_in) (an upper bound of u·√(Σ fan_ins)).
//! - Two summation orders each carry such an error: their difference has √2 of it.
//! - [`LAMBDA`] standard deviations: a correct port exceeds it with probability below 1e-8.
//!
//! The result is relative to the largest absolute value of the reference tensor (the
//! magnitude the layer's sums run at), not to each element.

/// Unit roundoff of float32 (2⁻²⁴).
pub const U32: f64 = 5.960_464_477_539_063e-8;

/// Standard deviations of the rounding error allowed. A Gaussian exceeds 6σ with probability
/// 2·Φ(−6) ≈ 2e-9, so even over the ~10⁶ elements of a fixture a correct port stays inside;
/// a wrong one (a misplaced channel, a missing BatchNorm, another epsilon) is off by 1e-3 to
/// O(1) relative, far outside.
pub const LAMBDA: f64 = 6.0;

/// The path through a network that a float32 result accumulates over.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    /// Reductions (convolutions, linear layers, pools) in sequence from input to output.
    pub depth: usize,
    /// The largest number of terms any one of them sums.
    pub fan_in: usize,
}

impl Path {
    /// Relative tolerance (to the reference's largest |value|) between two summation orders.
    pub fn reorder_tolerance(self) -> f64 {
        LAMBDA * std::f64::consts::SQRT_2 * U32 * ((self.depth * self.fan_in) as f64).sqrt()
    }

    /// The same path followed back by autograd: the backward pass runs every reduction again
    /// (transposed) on top of the forward's error, so twice the depth.
    pub fn backward(self) -> Path {
        Path {
            depth: 2 * self.depth,
            fan_in: self.fan_in,
        }
    }
}

/// MUXNet-m (`../shared/docs/muxnet_m_layers.tsv`): stem, 18 blocks of at most three convs
/// each plus SE's pool and two 1x1 convs on the gating path (≤ 6 sequential reductions a
/// block), head conv, global pool, classifier: 1 + 18·6 + 3 = 112 in sequence. The widest
/// sum is SE's average pool of block 0 over 112² = 12,544 positions (the widest conv or
/// linear sum is the classifier's 1,280).
pub const MUXNET_M: Path = Path {
    depth: 112,
    fan_in: 112 * 112,
};

/// MUXNet-l: the same kinds of block, 21 of them (1 + 21·6 + 3 = 130); widest sum as for m.
pub const MUXNET_L: Path = Path {
    depth: 130,
    fan_in: 112 * 112,
};

/// DenseNet-121 (torchvision): stem conv + pool, 58 dense layers of two convs, 3 transitions
/// (conv + pool), final norm and global pool, classifier: 2 + 116 + 6 + 2 + 1 = 127. The widest
/// sum: the 3×3 conv of the last dense layers sees 128·9 = 1,152 terms, transition 3's 1x1
/// conv 1,024, the last block's 1x1 convs up to 992, the global pool 7² = 49; the stem's 7×7
/// conv 147. 1,152 it is.
pub const DENSENET121: Path = Path {
    depth: 127,
    fan_in: 1152,
};

/// `pipelines/archs/muxnet_demo.json` at 64×64: stem, 9 blocks of ≤ 6 sequential reductions,
/// head conv, pool, classifier (58); widest sum block 0's SE pool over 32² positions.
pub const MUXNET_DEMO_64: Path = Path {
    depth: 58,
    fan_in: 32 * 32,
};

/// The largest |value| of a reference tensor, refusing one too small to test anything.
#[cfg(feature = "torch")]
pub fn scale_of(reference: &tch::Tensor) -> f64 {
    let s = reference.abs().max().double_value(&[]);
    assert!(
        s > 1e-3,
        "a reference of largest |value| {s} cannot tell a correct port from a wrong one"
    );
    s
}

/// max |a − b| / max |reference|, with the shapes checked.
#[cfg(feature = "torch")]
pub fn relative_diff(ours: &tch::Tensor, reference: &tch::Tensor) -> f64 {
    assert_eq!(ours.size(), reference.size(), "shape");
    (ours - reference).abs().max().double_value(&[]) / scale_of(reference)
}

/// Asserts `ours` equals `reference` within the reordering bound of `path`, naming `what`.
#[cfg(feature = "torch")]
pub fn assert_close(what: &str, ours: &tch::Tensor, reference: &tch::Tensor, path: Path) {
    let d = relative_diff(ours, reference);
    let tol = path.reorder_tolerance();
    assert!(
        d <= tol,
        "{what}: max |diff| / max |reference| = {d:e}, over the float32 reordering bound \
         {tol:e} (depth {}, fan-in {})",
        path.depth,
        path.fan_in
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_what_the_formula_says() {
        // By hand: 6 · √2 · 2⁻²⁴ · √(112 · 12544) = 6 · 1.41421 · 5.96046e-8 · 1185.3 ≈ 5.995e-4.
        let t = MUXNET_M.reorder_tolerance();
        assert!((t - 5.995e-4).abs() < 0.005e-4, "{t}");
        assert!(MUXNET_M.backward().reorder_tolerance() > t);
    }
}
