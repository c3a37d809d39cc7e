//! Every GEMM the model issues runs inside one of the sites that `ModelConfig::sites` lists.
//!
//! The model runs on `fp8_core::Precision<NdArray>` with a recipe that quantizes nothing but
//! records which site each GEMM asks about. The whole forward pass sits inside an extra outer
//! scope, so a GEMM issued outside any site scope of the model (or inside a non-leaf scope such as
//! `h.0.attn`) would show up as `outer` or `outer.h.0.attn` and fail the comparison.

use std::sync::{Arc, Mutex};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use fp8_core::context::activate;
use fp8_core::{sites, Precision, PrecisionContext, Recipe, Role};
use fp8_formats::QuantSpec;
use fp8_models::ModelConfig;

/// Keeps everything in f32; remembers the sites it was asked about, in order.
struct Spy(Arc<Mutex<Vec<String>>>);

impl Recipe for Spy {
    fn spec(&self, site: &str, _role: Role, _step: u64) -> Option<QuantSpec> {
        let mut seen = self.0.lock().unwrap();
        if seen.last().map(String::as_str) != Some(site) {
            seen.push(site.to_string());
        }
        None
    }
}

fn gemm_sites(cfg: &ModelConfig) -> Vec<String> {
    type P = Precision<NdArray>;
    let device = Default::default();
    let model = cfg.init::<P>(&device);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ctx = PrecisionContext::new(Box::new(Spy(seen.clone()))).shared();
    let _active = activate(ctx);
    let tokens =
        Tensor::<P, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]), &device);
    {
        let _outer = sites::scope("outer");
        let _ = model.forward(tokens);
    }
    let seen = seen.lock().unwrap().clone();
    seen.into_iter()
        .map(|s| s.strip_prefix("outer.").unwrap_or(&s).to_string())
        .collect()
}

#[test]
fn every_gemm_is_in_a_listed_site_in_order() {
    let gpt2 = ModelConfig::from_preset_or_file("tiny").unwrap();
    let llama = ModelConfig::llama(2, 4, 2, 32, 48, 16, 64);
    let smooth = ModelConfig {
        smooth_swiglu: true,
        ..llama.clone()
    };
    let untied = ModelConfig {
        tie_embeddings: false,
        ..gpt2.clone()
    };
    for cfg in [gpt2, llama, smooth, untied] {
        assert_eq!(gemm_sites(&cfg), cfg.sites(), "{cfg:?}");
        // The stability options add no GEMM and rename none.
        let stable = ModelConfig {
            qk_norm: true,
            z_loss: 1e-4,
            ..cfg.clone()
        };
        assert_eq!(stable.sites(), cfg.sites());
        assert_eq!(gemm_sites(&stable), cfg.sites(), "{stable:?}");
    }
}
