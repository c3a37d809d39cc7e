//! [`FusedOps`] under [`Autodiff`]: each fused forward op is one graph node whose backward is the
//! inner backend's fused backward.
//!
//! The nodes are compute bound (a checkpointing strategy keeps their outputs rather than
//! recompute them). Their inputs are saved the way burn's own ops save them, through the
//! checkpointer (`prep.checkpoint`, retrieved in `backward`), so a strategy that recomputes a
//! memory-bound parent stays correct; what the op itself produces for its backward (softmax's
//! output, the norm statistics, the log-sum-exp, the int targets) is kept in the node's state.
//!
//! The `*_backward` methods on `Autodiff<B>` run `B`'s and return untracked tensors: burn 0.21
//! has no double backward.

use super::{FusedOps, NormGrads, NormOutput};
use burn::backend::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{unary, Backward, Ops, OpsKind, OpsPrep};
use burn_autodiff::NodeId;
use burn_backend::backend::AutodiffBackend;
use burn_backend::tensor::{FloatTensor, IntTensor};
use burn_backend::TensorMetadata;

/// An untracked (constant) autodiff tensor.
fn constant<B: FusedOps, C: CheckpointStrategy>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    Autodiff::<B, C>::from_inner(t)
}

#[derive(Debug)]
struct Contiguous;

impl<B: FusedOps> Backward<B, 1> for Contiguous {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, B::fused_contiguous);
    }
}

#[derive(Debug)]
struct Softmax;

impl<B: FusedOps> Backward<B, 1> for Softmax {
    /// The forward output `y`.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::fused_softmax_backward(y, dy)
        });
    }
}

#[derive(Debug)]
struct Heads;

impl<B: FusedOps> Backward<B, 1> for Heads {
    /// `first` and the number of heads of the parent.
    type State = (usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (first, heads) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::fused_heads_backward(dy, first, heads)
        });
    }
}

#[derive(Debug)]
struct CausalSoftmax;

impl<B: FusedOps> Backward<B, 1> for CausalSoftmax {
    /// The forward output `y` and the scale.
    type State = (FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y, scale) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::fused_causal_softmax_backward(y, dy, scale)
        });
    }
}

#[derive(Debug)]
struct GeluTanh;

impl<B: FusedOps> Backward<B, 1> for GeluTanh {
    /// The input `x`, checkpointed.
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let x = checkpointer.retrieve_node_output(ops.state);
        unary::<B, _>(ops.parents, ops.node, grads, |dy| {
            B::fused_gelu_tanh_backward(x, dy)
        });
    }
}

/// LayerNorm/RMSNorm with `N` parents: `x`, `weight` and, when `N == 3`, `bias`.
#[derive(Debug)]
struct Norm;

/// `x` and `weight` (checkpointed), `mean`, `rstd`, `rms`.
type NormState<B> = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, bool);

impl<B: FusedOps, const N: usize> Backward<B, N> for Norm {
    type State = NormState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (x, weight, mean, rstd, rms) = ops.state;
        let x = checkpointer.retrieve_node_output(x);
        let weight = checkpointer.retrieve_node_output(weight);
        let dy = grads.consume::<B>(&ops.node);
        let (dx, dweight, dbias) = B::fused_norm_backward(x, weight, mean, rstd, rms, dy, N == 3);
        for (parent, grad) in ops
            .parents
            .into_iter()
            .zip([Some(dx), Some(dweight), dbias])
        {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

type AdTensor<B, C> = FloatTensor<Autodiff<B, C>>;

/// Record the norm node prepared over `[x, weight]` or `[x, weight, bias]`.
fn norm_node<B: FusedOps, C: CheckpointStrategy, const N: usize>(
    prep: OpsPrep<Norm, B, NormState<B>, C, N>,
    x: AdTensor<B, C>,
    weight: AdTensor<B, C>,
    bias: Option<AdTensor<B, C>>,
    eps: f64,
    rms: bool,
) -> NormOutput<Autodiff<B, C>> {
    let bias = bias.map(|b| b.primitive);
    match prep.compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let w_id = prep.checkpoint(&weight);
            let (y, mean, rstd) = B::fused_norm(x.primitive, weight.primitive, bias, eps, rms);
            let state = (x_id, w_id, mean.clone(), rstd.clone(), rms);
            (
                prep.finish(state, y),
                constant::<B, C>(mean),
                constant::<B, C>(rstd),
            )
        }
        OpsKind::UnTracked(prep) => {
            let (y, mean, rstd) = B::fused_norm(x.primitive, weight.primitive, bias, eps, rms);
            (
                prep.finish(y),
                constant::<B, C>(mean),
                constant::<B, C>(rstd),
            )
        }
    }
}

#[derive(Debug)]
struct CrossEntropy;

impl<B: FusedOps> Backward<B, 1> for CrossEntropy {
    /// `logits` (checkpointed), `targets`, `lse`.
    type State = (NodeId, IntTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (logits, targets, lse) = ops.state;
        let logits = checkpointer.retrieve_node_output(logits);
        unary::<B, _>(ops.parents, ops.node, grads, |dloss| {
            B::fused_cross_entropy_backward(logits, targets, lse, dloss)
        });
    }
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_contiguous(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let out = B::fused_contiguous(x.primitive);
        Contiguous
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateless(out)
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match Softmax
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_softmax(x.primitive);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_softmax(x.primitive)),
        }
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        constant::<B, C>(B::fused_softmax_backward(y.primitive, dy.primitive))
    }

    fn fused_heads(
        qkv: FloatTensor<Self>,
        first: usize,
        n: usize,
        head_dim: usize,
    ) -> FloatTensor<Self> {
        let [_, _, heads] = super::defaults::heads_dims(&qkv.primitive.shape(), first, n, head_dim);
        match Heads
            .prepare::<C>([qkv.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (first, heads),
                B::fused_heads(qkv.primitive, first, n, head_dim),
            ),
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fused_heads(qkv.primitive, first, n, head_dim))
            }
        }
    }

    fn fused_heads_backward(
        dy: FloatTensor<Self>,
        first: usize,
        heads: usize,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::fused_heads_backward(dy.primitive, first, heads))
    }

    fn fused_causal_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        match CausalSoftmax
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_causal_softmax(x.primitive, scale);
                prep.finish((y.clone(), scale), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_causal_softmax(x.primitive, scale)),
        }
    }

    fn fused_causal_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::fused_causal_softmax_backward(
            y.primitive,
            dy.primitive,
            scale,
        ))
    }

    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluTanh
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                prep.finish(x_id, B::fused_gelu_tanh(x.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_gelu_tanh(x.primitive)),
        }
    }

    fn fused_gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        constant::<B, C>(B::fused_gelu_tanh_backward(x.primitive, dy.primitive))
    }

    fn fused_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        eps: f64,
        rms: bool,
    ) -> NormOutput<Self> {
        match &bias {
            Some(b) => {
                let prep = Norm.prepare::<C>([x.node.clone(), weight.node.clone(), b.node.clone()]);
                norm_node(prep, x, weight, bias, eps, rms)
            }
            None => {
                let prep = Norm.prepare::<C>([x.node.clone(), weight.node.clone()]);
                norm_node(prep, x, weight, None, eps, rms)
            }
        }
    }

    fn fused_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        rms: bool,
        dy: FloatTensor<Self>,
        has_bias: bool,
    ) -> NormGrads<Self> {
        let (dx, dweight, dbias) = B::fused_norm_backward(
            x.primitive,
            weight.primitive,
            mean.primitive,
            rstd.primitive,
            rms,
            dy.primitive,
            has_bias,
        );
        (
            constant::<B, C>(dx),
            constant::<B, C>(dweight),
            dbias.map(constant::<B, C>),
        )
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match CrossEntropy
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let logits_id = prep.checkpoint(&logits);
                let (loss, lse) = B::fused_cross_entropy(logits.primitive, targets.clone());
                let loss = prep.finish((logits_id, targets, lse.clone()), loss);
                (loss, constant::<B, C>(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (loss, lse) = B::fused_cross_entropy(logits.primitive, targets);
                (prep.finish(loss), constant::<B, C>(lse))
            }
        }
    }

    fn fused_cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        dloss: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        constant::<B, C>(B::fused_cross_entropy_backward(
            logits.primitive,
            targets,
            lse.primitive,
            dloss.primitive,
        ))
    }
}
