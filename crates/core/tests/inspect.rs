//! TE-debug-style inspection of casts, for the active recipe and counterfactual recipes, on
//! logging steps only, without changing what training computes.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::{sites, Precision, Recipe, Role};
use fp8_formats::{
    inspect, BlockAxis, CastSpec, DynamicRangeBlocks, Format, MxRule, QuantSpec, Scaling,
    TensorScale,
};

struct One(Role, QuantSpec);

impl Recipe for One {
    fn spec(&self, _site: &str, role: Role, _step: u64) -> Option<QuantSpec> {
        (role == self.0).then_some(self.1)
    }
}

fn e4m3(scaling: Scaling) -> QuantSpec {
    QuantSpec {
        cast: CastSpec::new(Format::FLOAT8_E4M3FN).with_saturate(true),
        scaling,
    }
}

type D = Precision<Autodiff<Flex>>;

fn forward(ctx: &std::sync::Arc<std::sync::Mutex<PrecisionContext>>, x: &[f32]) -> Vec<f32> {
    let _active = activate(ctx.clone());
    let dev = Default::default();
    let a = Tensor::<D, 2>::from_data(TensorData::new(x.to_vec(), [4, 64]), &dev);
    let w = Tensor::<D, 2>::from_data(TensorData::new(vec![0.5f32; 64 * 3], [64, 3]), &dev);
    let _s = sites::scope("h.0.mlp.fc");
    a.matmul(w).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn counterfactual_recipes_are_measured_on_the_same_tensors_and_change_nothing() {
    let x: Vec<f32> = (0..256)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 2f32.powi((i % 9) - 12))
        .collect();
    let active = e4m3(Scaling::Tensor(TensorScale::Current { pow2: false }));
    let mx = e4m3(Scaling::Mx {
        block: 32,
        rule: MxRule::Rceil,
        axis: BlockAxis::Cols,
    });
    let blocks = DynamicRangeBlocks {
        size: 32,
        two_d: false,
    };
    let plain = PrecisionContext::new(Box::new(One(Role::X, active))).shared();
    let y0 = forward(&plain, &x);

    let mut ctx = PrecisionContext::new(Box::new(One(Role::X, active)));
    ctx.set_inspection(Some(blocks));
    ctx.add_counterfactual("mxfp8", Box::new(One(Role::X, mx)));
    let ctx = ctx.shared();
    let y1 = forward(&ctx, &x);
    assert_eq!(y0, y1, "inspection changes nothing");
    let got = ctx.lock().unwrap().take_inspections();
    let key = |name: &str| ("h.0.mlp.fc".to_string(), Role::X, name.to_string());
    assert_eq!(got[&key("")], inspect(&x, &[4, 64], &active, blocks));
    assert_eq!(got[&key("mxfp8")], inspect(&x, &[4, 64], &mx, blocks));
    assert_eq!(got.len(), 2);

    // A step that logs no telemetry inspects nothing.
    ctx.lock().unwrap().end_step();
    ctx.lock().unwrap().set_telemetry(false);
    let y2 = forward(&ctx, &x);
    assert_eq!(y0, y2);
    assert!(ctx.lock().unwrap().take_inspections().is_empty());
}
