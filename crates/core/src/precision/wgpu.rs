//! [`QuantizeBackend`] for burn's wgpu backend (cargo feature `wgpu`), and the choice of its
//! device from a `--device wgpu[:N]` index.
//!
//! Like the CUDA impl (`cuda.rs`) this uses the device path ([`quantize_via_device`]): the
//! recipe's quantize → dequantize runs as burn tensor ops on the device (CubeCL kernels through
//! Vulkan on Linux, Metal on macOS) and only a few telemetry scalars come back to the host; specs
//! the device path does not cover fall back to the host kernel (see [`super::device`]).
//! `Autodiff<Wgpu>` is covered by the generic `Autodiff` impl in `hook.rs`.
//!
//! Only `f32` is implemented: wgpu has no `bf16`, and `f16` is an optional device feature
//! (lavapipe, the software device CI uses, lacks it). burn-wgpu's `fusion` feature is off in
//! this crate, so [`Wgpu`] is the plain `CubeBackend`.
//!
//! # Devices
//!
//! cubecl picks an adapter by kind and index within the kind ([`WgpuDevice::DiscreteGpu`],
//! `IntegratedGpu`, `VirtualGpu`, `Cpu`) and panics when none matches. [`device`] turns the
//! user's flat index (the `N` of `wgpu:N`, counting every adapter of the platform's graphics API
//! in the order the driver lists them, as `vulkaninfo --summary` does) into that form, and
//! reports an index that names no adapter as an error instead.

use super::{quantize_via_device, QuantizeBackend};
use crate::Role;
use burn_backend::tensor::FloatTensor;
use burn_wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
pub use burn_wgpu::{Wgpu, WgpuDevice};
use std::sync::Arc;

impl QuantizeBackend for Wgpu<f32, i32, u32> {
    fn quantize_forward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self> {
        quantize_via_device::<Self>(t, site, role)
    }

    fn quantize_backward(t: FloatTensor<Self>, _site: &Arc<str>, _role: Role) -> FloatTensor<Self> {
        t
    }
}

/// One adapter as the driver lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    /// The driver's name for it, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` for lavapipe.
    pub name: String,
    /// The kind: `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub kind: String,
    /// The graphics API, e.g. `Vulkan`.
    pub api: String,
}

/// Why `--device wgpu[:N]` names no usable adapter.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("--device {0}: expected wgpu or wgpu:N (N an adapter index, e.g. wgpu:0)")]
    Spelling(String),
    #[error(
        "--device wgpu: no {api} adapter found (on Linux install a Vulkan driver, e.g. \
         lavapipe: Debian packages mesa-vulkan-drivers and libvulkan1)"
    )]
    NoAdapter { api: String },
    #[error("--device wgpu:{index}: there are {count} {api} adapter(s), so N must be below {count}: {list}")]
    NoSuchIndex {
        index: usize,
        count: usize,
        api: String,
        list: String,
    },
    #[error("--device wgpu:{index}: adapter {name:?} is of a kind the wgpu runtime cannot select by index")]
    Unselectable { index: usize, name: String },
}

/// The adapters of the platform's graphics API (Vulkan on Linux, Metal on macOS), in the
/// driver's order: the numbering of `wgpu:N`.
pub fn adapters() -> Vec<Adapter> {
    raw_adapters()
        .into_iter()
        .map(|info| Adapter {
            name: info.name,
            kind: format!("{:?}", info.device_type),
            api: format!("{:?}", info.backend),
        })
        .collect()
}

fn raw_adapters() -> Vec<::wgpu::AdapterInfo> {
    let backend = AutoGraphicsApi::backend();
    let instance = ::wgpu::Instance::new(::wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..::wgpu::InstanceDescriptor::new_without_display_handle()
    });
    block_on(instance.enumerate_adapters(backend.into()))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

/// The device for `--device wgpu` (`index: None`: the runtime's default choice, which prefers a
/// high-performance GPU and takes the software device when there is nothing else) or
/// `--device wgpu:N` (the `N`-th adapter of [`adapters`]). Errors when no adapter matches, so
/// that the first tensor op does not panic inside the runtime.
pub fn device(index: Option<usize>) -> Result<WgpuDevice, DeviceError> {
    let all = raw_adapters();
    let api = format!("{:?}", AutoGraphicsApi::backend());
    let Some(index) = index else {
        return if all.is_empty() {
            Err(DeviceError::NoAdapter { api })
        } else {
            Ok(WgpuDevice::DefaultDevice)
        };
    };
    let Some(chosen) = all.get(index) else {
        if all.is_empty() {
            return Err(DeviceError::NoAdapter { api });
        }
        let list = all
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {} ({:?})", a.name, a.device_type))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(DeviceError::NoSuchIndex {
            index,
            count: all.len(),
            api,
            list,
        });
    };
    // cubecl counts adapters within their kind, in the same driver order.
    let within = all[..index]
        .iter()
        .filter(|a| a.device_type == chosen.device_type)
        .count();
    use ::wgpu::DeviceType as K;
    match chosen.device_type {
        K::DiscreteGpu => Ok(WgpuDevice::DiscreteGpu(within)),
        K::IntegratedGpu => Ok(WgpuDevice::IntegratedGpu(within)),
        K::VirtualGpu => Ok(WgpuDevice::VirtualGpu(within)),
        // cubecl selects only the first CPU adapter.
        K::Cpu if within == 0 => Ok(WgpuDevice::Cpu),
        _ => Err(DeviceError::Unselectable {
            index,
            name: chosen.name.clone(),
        }),
    }
}

/// Parse `--device wgpu` or `--device wgpu:N` and choose the device ([`device`]).
pub fn parse(spec: &str) -> Result<WgpuDevice, DeviceError> {
    let index = match spec.strip_prefix("wgpu") {
        Some("") => None,
        Some(rest) => Some(
            rest.strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| DeviceError::Spelling(spec.to_string()))?,
        ),
        None => return Err(DeviceError::Spelling(spec.to_string())),
    };
    device(index)
}

/// Drives a future to completion on this thread. wgpu's native adapter enumeration is ready at
/// the first poll; the loop only guards against a backend that is not.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
