//! Short training runs of each production recipe on a tiny GPT-2: the losses stay finite and
//! fall, the run differs from fp32 (the recipe does quantize), the step's telemetry names the
//! backward copies, and the recipe's state survives a checkpoint round trip.

use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use fp8_core::context::activate;
use fp8_core::recipe::from_ron_str;
use fp8_core::{Precision, PrecisionContext, Recipe, Role};
use fp8_formats::QuantSpec;
use fp8_models::{Model, ModelConfig};
use std::path::PathBuf;

use fp8_recipes as _;

type Train = Precision<Autodiff<Flex>>;

fn text(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn config() -> ModelConfig {
    ModelConfig::gpt2(4, 2, 32, 16, 64)
}

/// Losses of `steps` Adam steps on one fixed batch, and the roles seen in the last step.
/// What a checkpoint needs to compare: the recipe's state and every spec it gives now.
type Snapshot = (serde_json::Value, Vec<Option<QuantSpec>>);

fn snapshot(r: &dyn Recipe, step: u64) -> Snapshot {
    let specs = config()
        .sites()
        .iter()
        .flat_map(|s| Role::ALL.map(|role| r.spec(s, role, step)))
        .collect();
    (r.state(), specs)
}

fn run(recipe_text: &str, steps: usize) -> (Vec<f32>, Vec<Role>, Snapshot) {
    let cfg = config();
    let mut recipe = from_ron_str(recipe_text, "recipe").unwrap();
    recipe.bind_sites(&cfg.sites()).unwrap();
    let ctx = PrecisionContext::new(recipe).shared();
    let _active = activate(ctx.clone());
    let device = Default::default();
    let (b, t) = (4, 16);
    let tokens: Vec<i64> = (0..b * (t + 1))
        .map(|i| ((i * 37 + 11) % 64) as i64)
        .collect();
    let rows: Vec<&[i64]> = tokens.chunks(t + 1).collect();
    let x: Vec<i64> = rows.iter().flat_map(|r| r[..t].to_vec()).collect();
    let y: Vec<i64> = rows.iter().flat_map(|r| r[1..].to_vec()).collect();
    let x = Tensor::<Train, 2, Int>::from_data(TensorData::new(x, [b, t]), &device);
    let y = Tensor::<Train, 2, Int>::from_data(TensorData::new(y, [b, t]), &device);
    let mut model: Model<Train> = cfg.init(&device);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::new();
    let mut roles = Vec::new();
    for _ in 0..steps {
        let loss = model.loss(x.clone(), y.clone());
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
        let tel = ctx.lock().unwrap().end_step();
        roles = tel.into_keys().map(|(_, r)| r).collect();
    }
    let snap = snapshot(ctx.lock().unwrap().recipe(), steps as u64);
    (losses, roles, snap)
}

#[test]
fn each_production_recipe_trains_and_its_state_survives_a_checkpoint() {
    let steps = 12;
    let (base, _, _) = run(&text("fp32.ron"), steps);
    let files = [
        ("mxfp8_nvidia.ron", true),
        // The tiny model has 4 blocks: keep the first and last in BF16, NVFP4 in between.
        ("nvfp4_nvidia.ron", true),
        ("torchao_tensorwise.ron", false),
        ("torchao_rowwise.ron", true),
        ("torchao_rowwise_with_gw_hp.ron", true),
        ("te_float8_block_scaling.ron", true),
        ("te_float8_current_scaling.ron", false),
    ];
    for (file, copies) in files {
        let t = text(file).replace("first: 2, last: 8", "first: 1, last: 1");
        let (losses, roles, snap) = run(&t, steps);
        assert!(losses.iter().all(|l| l.is_finite()), "{file}: {losses:?}");
        assert!(
            losses[steps - 1] < 0.9 * losses[0],
            "{file}: loss did not fall: {losses:?}"
        );
        assert_ne!(
            losses, base,
            "{file}: identical to fp32, nothing was quantized"
        );
        assert_eq!(
            roles.contains(&Role::WDgrad),
            copies,
            "{file}: telemetry roles {roles:?}"
        );
        // Checkpoint: the state restores into a fresh recipe, which then answers the same.
        let mut fresh = from_ron_str(&t, "fresh").unwrap();
        fresh.bind_sites(&config().sites()).unwrap();
        fresh.restore(snap.0.clone()).unwrap();
        assert_eq!(snapshot(fresh.as_ref(), steps as u64), snap, "{file}");
    }
}
