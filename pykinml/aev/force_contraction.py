"""∂E/∂x (N, 3) from ∂E/∂G (N, D) through the cached Jacobian rows in one pass over the stored pairs, and its
transpose: the force contraction of a training step on CPU, as two numba kernels.

Through torch operations (:func:`pykinml.aev.jacobian.pair_gradients`, then four index_adds) the same sum takes
about thirty operations forward and as many backward, each a few microseconds of dispatch and a temporary;
here it is one loop each way. Each function is the other's derivative, so the pair is differentiable to any
order. Stress needs every pair's ∂E/∂r_p and on other devices (CUDA) there are no kernels: both take the
torch path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pykinml.aev.gather_contract import compiled_kernels

if TYPE_CHECKING:
    from pykinml.aev.jacobian import AEVJacobian


def atom_gradient(source: Tensor, species: Tensor, jacobian: AEVJacobian, pair_block: Tensor, radial_length: int) -> Tensor:
    """∂E/∂x (N, 3) from ``source`` = ∂E/∂G (N, D); ``pair_block`` (n_el, n_el) the angular block of each element
    pair, ``radial_length`` the radial terms per element. Differentiable in ``source``."""
    if any(t.requires_grad for t in (jacobian.radial_dr, jacobian.radial_unit, jacobian.angular)):
        raise RuntimeError("atom_gradient: the Jacobian rows are data; their gradient is not computed")
    return _AtomGradient.apply(source, (species, jacobian, pair_block, radial_length))


class _AtomGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, source: Tensor, constants: tuple) -> Tensor:
        ctx.constants, ctx.width, ctx.dtype = constants, source.shape[1], source.dtype
        return _run("atom_gradient", source, constants, (source.shape[0], 3))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        return _AtomGradientTranspose.apply(grad, ctx.constants, ctx.width).to(ctx.dtype), None


class _AtomGradientTranspose(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad: Tensor, constants: tuple, width: int) -> Tensor:
        ctx.constants, ctx.dtype = constants, grad.dtype
        return _run("atom_gradient_transpose", grad, constants, (grad.shape[0], width))

    @staticmethod
    def backward(ctx, source_bar_bar: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _AtomGradient.apply(source_bar_bar, ctx.constants).to(ctx.dtype), None, None


def _run(kernel: str, values: Tensor, constants: tuple, shape: tuple[int, int]) -> Tensor:
    """Call ``kernel`` in the promoted dtype of ``values`` and the Jacobian rows (as torch's operations would)."""
    species, jacobian, pair_block, radial_length = constants
    dtype = torch.promote_types(values.dtype, jacobian.angular.dtype)

    def array(tensor: Tensor):
        return tensor.to(dtype).contiguous().numpy()

    # Index arrays go in as they are: the cache's pair indices are strided views of one (P, 2) array.
    out = values.new_zeros(shape, dtype=dtype)
    getattr(compiled_kernels(), kernel)(
        array(values), species.numpy(), jacobian.radial_center.numpy(), jacobian.radial_neighbor.numpy(),
        array(jacobian.radial_dr), array(jacobian.radial_unit), jacobian.angular_center.numpy(),
        jacobian.angular_neighbor.numpy(), array(jacobian.angular), pair_block.numpy(), radial_length, out.numpy(),
    )
    return out
