//! [`GemmOps`] under [`Autodiff`]: one graph node per product, whose backward computes both
//! gradient products in one call of the inner backend's `gemm_*_backward`.
//!
//! The nodes save their operands as burn's own `matmul` and `linear` nodes do: through the
//! checkpointer, each only if the other operand's gradient is wanted (`lhs` is needed for the
//! gradient of `rhs` and the other way round). The `*_backward` methods on `Autodiff<B>` run
//! `B`'s and return untracked tensors: burn 0.21 has no double backward.

use super::{GemmOps, LinearGrads};
use burn::backend::Autodiff;
use burn::tensor::{Shape, TensorMetadata};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{broadcast_shape, Backward, Ops, OpsKind};
use burn_autodiff::NodeId;
use burn_backend::backend::AutodiffBackend;
use burn_backend::tensor::FloatTensor;

/// An untracked (constant) autodiff tensor.
fn constant<B: GemmOps, C: CheckpointStrategy>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    Autodiff::<B, C>::from_inner(t)
}

/// `grad` summed over the dimensions where `shape` is 1 and `grad` is not (broadcast batch
/// dimensions), as burn's matmul backward does.
fn unbroadcast<B: GemmOps>(grad: FloatTensor<B>, shape: &Shape) -> FloatTensor<B> {
    if grad.shape() == *shape {
        grad
    } else {
        broadcast_shape::<B>(grad, shape)
    }
}

#[derive(Debug)]
struct Matmul;

/// `lhs` (if the gradient of `rhs` is wanted), `rhs` (if that of `lhs` is), and both shapes.
type MatmulState = (Option<NodeId>, Option<NodeId>, Shape, Shape);

impl<B: GemmOps> Backward<B, 2> for Matmul {
    type State = MatmulState;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (lhs, rhs, lhs_shape, rhs_shape) = ops.state;
        let [node_lhs, node_rhs] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let lhs = lhs.map(|id| checkpointer.retrieve_node_output(id));
        let rhs = rhs.map(|id| checkpointer.retrieve_node_output(id));
        let (dlhs, drhs) = B::gemm_matmul_backward(lhs, rhs, dy);
        if let (Some(node), Some(g)) = (node_lhs, dlhs) {
            grads.register::<B>(node.id, unbroadcast::<B>(g, &lhs_shape));
        }
        if let (Some(node), Some(g)) = (node_rhs, drhs) {
            grads.register::<B>(node.id, unbroadcast::<B>(g, &rhs_shape));
        }
    }
}

/// `linear` with `N` parents: `x`, `weight` and, when `N == 3`, `bias`.
#[derive(Debug)]
struct Linear;

/// `x` (if the weight gradient is wanted) and `weight` (if the input gradient is).
type LinearState = (Option<NodeId>, Option<NodeId>);

impl<B: GemmOps, const N: usize> Backward<B, N> for Linear {
    type State = LinearState;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (x, weight) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let x = x.map(|id| checkpointer.retrieve_node_output(id));
        let weight = weight.map(|id| checkpointer.retrieve_node_output(id));
        let bias_grad = N == 3 && ops.parents[2].is_some();
        let (dx, dw, db) = B::gemm_linear_backward(x, weight, dy, bias_grad);
        for (parent, grad) in ops.parents.into_iter().zip([dx, dw, db]) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

type AdTensor<B, C> = FloatTensor<Autodiff<B, C>>;

impl<B: GemmOps, C: CheckpointStrategy> GemmOps for Autodiff<B, C> {
    fn gemm_matmul(lhs: AdTensor<B, C>, rhs: AdTensor<B, C>) -> AdTensor<B, C> {
        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        match Matmul
            .prepare::<C>([lhs.node.clone(), rhs.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let lhs_id = rhs_tracked.then(|| prep.checkpoint(&lhs));
                let rhs_id = lhs_tracked.then(|| prep.checkpoint(&rhs));
                let state = (lhs_id, rhs_id, lhs.primitive.shape(), rhs.primitive.shape());
                prep.finish(state, B::gemm_matmul(lhs.primitive, rhs.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gemm_matmul(lhs.primitive, rhs.primitive)),
        }
    }

    fn gemm_matmul_backward(
        lhs: Option<AdTensor<B, C>>,
        rhs: Option<AdTensor<B, C>>,
        dy: AdTensor<B, C>,
    ) -> (Option<AdTensor<B, C>>, Option<AdTensor<B, C>>) {
        let (dlhs, drhs) = B::gemm_matmul_backward(
            lhs.map(|t| t.primitive),
            rhs.map(|t| t.primitive),
            dy.primitive,
        );
        (dlhs.map(constant::<B, C>), drhs.map(constant::<B, C>))
    }

    fn gemm_linear(
        x: AdTensor<B, C>,
        weight: AdTensor<B, C>,
        bias: Option<AdTensor<B, C>>,
    ) -> AdTensor<B, C> {
        let (x_tracked, w_tracked) = (x.is_tracked(), weight.is_tracked());
        match bias {
            Some(bias) => {
                let parents = [x.node.clone(), weight.node.clone(), bias.node.clone()];
                match Linear.prepare::<C>(parents).compute_bound().stateful() {
                    OpsKind::Tracked(mut prep) => {
                        let x_id = w_tracked.then(|| prep.checkpoint(&x));
                        let w_id = x_tracked.then(|| prep.checkpoint(&weight));
                        let y = B::gemm_linear(x.primitive, weight.primitive, Some(bias.primitive));
                        prep.finish((x_id, w_id), y)
                    }
                    OpsKind::UnTracked(prep) => prep.finish(B::gemm_linear(
                        x.primitive,
                        weight.primitive,
                        Some(bias.primitive),
                    )),
                }
            }
            None => {
                let parents = [x.node.clone(), weight.node.clone()];
                match Linear.prepare::<C>(parents).compute_bound().stateful() {
                    OpsKind::Tracked(mut prep) => {
                        let x_id = w_tracked.then(|| prep.checkpoint(&x));
                        let w_id = x_tracked.then(|| prep.checkpoint(&weight));
                        let y = B::gemm_linear(x.primitive, weight.primitive, None);
                        prep.finish((x_id, w_id), y)
                    }
                    OpsKind::UnTracked(prep) => {
                        prep.finish(B::gemm_linear(x.primitive, weight.primitive, None))
                    }
                }
            }
        }
    }

    fn gemm_linear_backward(
        x: Option<AdTensor<B, C>>,
        weight: Option<AdTensor<B, C>>,
        dy: AdTensor<B, C>,
        bias_grad: bool,
    ) -> LinearGrads<Self> {
        let (dx, dw, db) = B::gemm_linear_backward(
            x.map(|t| t.primitive),
            weight.map(|t| t.primitive),
            dy.primitive,
            bias_grad,
        );
        (
            dx.map(constant::<B, C>),
            dw.map(constant::<B, C>),
            db.map(constant::<B, C>),
        )
    }
}
