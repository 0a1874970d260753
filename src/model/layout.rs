//! Memory layout of 4-D tensors. tch has no memory-format argument, but a tensor made by
//! `permute([0,2,3,1]).contiguous().permute([0,3,1,2])` keeps its NCHW shape with NHWC
//! strides, and libtorch's CPU convolution, BatchNorm, pooling and element-wise kernels keep
//! that layout in their outputs. The network's format is the format of its conv weights,
//! set once with [`apply`]; each forward pass brings its input to the same format.

use tch::{nn, Tensor};

pub use crate::config::MemoryFormat;

/// True when `x` is 4-D and its channels are the innermost dimension in memory (stride 1),
/// dense or a channel slice of such a tensor. Ambiguous tensors (one channel, or 1×1 maps
/// whose channel stride is the smallest anyway) count as channels-last when their channel
/// stride is 1 or the channel axis has size 1.
pub fn is_channels_last(x: &Tensor) -> bool {
    let size = x.size();
    if size.len() != 4 {
        return false;
    }
    let stride = x.stride();
    size[1] == 1 || stride[1] == 1
}

/// True when `x` is exactly a dense NHWC-strided tensor (what PyTorch calls contiguous in
/// `torch.channels_last`); axes of size 1 may have any stride, as in PyTorch's check.
pub fn is_dense_channels_last(x: &Tensor) -> bool {
    let size = x.size();
    if size.len() != 4 {
        return false;
    }
    let stride = x.stride();
    let mut expected = 1i64;
    for d in [1usize, 3, 2, 0] {
        if size[d] != 1 && stride[d] != expected {
            return false;
        }
        expected *= size[d];
    }
    true
}

/// `x` in format `f`: a copy when its layout differs, the same tensor otherwise. Tensors
/// that are not 4-D are returned as they are.
pub fn to_format(x: &Tensor, f: MemoryFormat) -> Tensor {
    if x.dim() != 4 {
        return x.shallow_clone();
    }
    match f {
        MemoryFormat::ChannelsLast if is_dense_channels_last(x) => x.shallow_clone(),
        MemoryFormat::ChannelsLast => x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]),
        MemoryFormat::Contiguous => x.contiguous(),
    }
}

/// The format of a network whose first conv weight is `w`.
pub fn format_of(w: &Tensor) -> MemoryFormat {
    if is_dense_channels_last(w) && !w.is_contiguous() {
        MemoryFormat::ChannelsLast
    } else {
        MemoryFormat::Contiguous
    }
}

/// Re-lays every 4-D variable of `vs` (the conv weights) in format `f`, in place: the
/// tensors keep their identity, so optimisers and saved handles still see them, and later
/// `copy_` loads keep the layout.
pub fn apply(vs: &nn::VarStore, f: MemoryFormat) {
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 {
                let laid = to_format(&var, f);
                var.set_data(&laid);
            }
        }
    });
}
