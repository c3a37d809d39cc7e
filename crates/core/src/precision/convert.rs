//! Moving values of backend-generic structs between `X<Precision<B>>` and `X<B>`.
//!
//! The primitives are the same types on both sides (`Precision` reuses `B`'s), but a struct
//! generic over the backend is a different Rust type per backend, so the forwarders in
//! `forward.rs` rebuild it field by field.

use super::{Precision, QuantizeBackend};
use burn_backend::ops::{
    DeformConv2dBackward, MaxPool1dBackward, MaxPool1dWithIndices, MaxPool2dBackward,
    MaxPool2dWithIndices,
};
use burn_backend::quantization::QuantizationParametersPrimitive;
use burn_backend::TensorPrimitive;

pub(crate) fn tp_in<B: QuantizeBackend>(t: TensorPrimitive<Precision<B>>) -> TensorPrimitive<B> {
    match t {
        TensorPrimitive::Float(t) => TensorPrimitive::Float(t),
        TensorPrimitive::QFloat(t) => TensorPrimitive::QFloat(t),
    }
}

pub(crate) fn tp_out<B: QuantizeBackend>(t: TensorPrimitive<B>) -> TensorPrimitive<Precision<B>> {
    match t {
        TensorPrimitive::Float(t) => TensorPrimitive::Float(t),
        TensorPrimitive::QFloat(t) => TensorPrimitive::QFloat(t),
    }
}

pub(crate) fn qparams_in<B: QuantizeBackend>(
    q: QuantizationParametersPrimitive<Precision<B>>,
) -> QuantizationParametersPrimitive<B> {
    QuantizationParametersPrimitive { scales: q.scales }
}

pub(crate) fn max_pool1d_out<B: QuantizeBackend>(
    r: MaxPool1dWithIndices<B>,
) -> MaxPool1dWithIndices<Precision<B>> {
    MaxPool1dWithIndices::new(r.output, r.indices)
}

pub(crate) fn max_pool2d_out<B: QuantizeBackend>(
    r: MaxPool2dWithIndices<B>,
) -> MaxPool2dWithIndices<Precision<B>> {
    MaxPool2dWithIndices::new(r.output, r.indices)
}

pub(crate) fn max_pool1d_backward_out<B: QuantizeBackend>(
    r: MaxPool1dBackward<B>,
) -> MaxPool1dBackward<Precision<B>> {
    MaxPool1dBackward::new(r.x_grad)
}

pub(crate) fn max_pool2d_backward_out<B: QuantizeBackend>(
    r: MaxPool2dBackward<B>,
) -> MaxPool2dBackward<Precision<B>> {
    MaxPool2dBackward::new(r.x_grad)
}

pub(crate) fn deform_conv2d_backward_out<B: QuantizeBackend>(
    r: DeformConv2dBackward<B>,
) -> DeformConv2dBackward<Precision<B>> {
    DeformConv2dBackward::new(
        r.x_grad,
        r.offset_grad,
        r.weight_grad,
        r.mask_grad,
        r.bias_grad,
    )
}
