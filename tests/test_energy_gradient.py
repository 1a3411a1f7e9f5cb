"""The hand-written energies, input gradients and their backward (training on forces) against autograd."""

from __future__ import annotations

import pytest
import torch

from pykinml.nn.activations import ACTIVATIONS
from pykinml.nn.energy_gradient import NetworkAndGradient
from pykinml.nn.potential import ChainedPotential


def _model(levels: int, activations, bias: bool = True) -> ChainedPotential:
    torch.manual_seed(3)
    model = ChainedPotential(levels, 3, 12, [9, 7, 5], activations, bias).double()
    for p in model.parameters():  # spread the pre-activations over both sides of every kink and bend
        p.data.normal_(0.0, 0.6)
    return model


def _inputs(n_atoms: int = 23, n_structures: int = 4):
    generator = torch.Generator().manual_seed(5)
    aev = torch.rand(n_atoms, 12, generator=generator, dtype=torch.float64) * 2.0 - 0.5
    species = torch.tensor([0, 2, 2, 1, 0, 2, 2, 2, 0, 1, 1, 2, 0, 2, 2, 0, 2, 1, 2, 2, 0, 2, 2])[:n_atoms]
    owner = torch.sort(torch.randint(0, n_structures, (n_atoms,), generator=generator)).values
    return aev, species, owner, n_structures


def _reference(model: ChainedPotential, aev, species, owner, n):
    """Energies and ∂E/∂G through autograd, with the graph kept so a loss on them can be differentiated."""
    aev = aev.detach().requires_grad_(True)
    energies = model(aev, species, owner, n)
    grads = torch.stack([torch.autograd.grad(level.sum(), aev, create_graph=True)[0] for level in energies])
    return energies, grads, aev


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("levels", [1, 2])
def test_energies_gradients_and_their_backward_equal_autograd(activation, levels):
    """Values, and the gradient of a loss on both energies and ∂E/∂G with respect to every weight and to the
    AEVs, equal autograd's double backward through the modules, in float64, for every activation."""
    model = _model(levels, activation)
    aev, species, owner, n = _inputs()
    energy_weights = torch.randn(levels, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grad_weights = torch.randn(levels, aev.shape[0], aev.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def loss_and_grads(energies, grads, wrt):
        loss = (energy_weights * energies).sum() + (grad_weights * grads).sum()
        return torch.autograd.grad(loss, [*model.parameters(), wrt])

    expected_energies, expected_grads, leaf = _reference(model, aev, species, owner, n)
    expected = loss_and_grads(expected_energies, expected_grads, leaf)
    leaf = aev.detach().requires_grad_(True)
    energies, grads = model.energies_and_gradients(leaf, species, owner, n)
    got = loss_and_grads(energies, grads, leaf)
    # Torch's CELU backward takes its slope from the output, (α(e^{x/α} − 1) + α)/α, which loses digits where
    # e^{x/α} is tiny (differences up to 7e-8 here); the hand-written slope is e^{x/α} itself, and passes
    # gradcheck below. Hence 1e-6 relative for CELU, float64's 1e-10 for the others.
    tolerance = 1e-6 if activation == "celu" else 1e-10
    torch.testing.assert_close(energies, expected_energies, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads, expected_grads, rtol=tolerance, atol=tolerance)
    for (name, _), a, b in zip([*model.named_parameters(), ("aev", None)], got, expected):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance, msg=f"gradient of {name} differs")


def test_an_element_absent_from_the_batch_gets_zero_gradients():
    """Under DDP every weight needs a gradient each step: an element with no atoms gets zeros, not None."""
    model = _model(1, "celu")
    aev, species, owner, n = _inputs()
    present = species != 1
    energies, grads = model.energies_and_gradients(aev[present], species[present], owner[present], n)
    (energies.sum() + grads.square().sum()).backward()
    absent = model.levels[0].networks[1]
    assert all(p.grad is not None and not p.grad.any() for p in absent.parameters())
    assert all(p.grad.any() for p in model.levels[0].networks[0].parameters())


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_backward_equals_finite_differences(activation, bias):
    """The autograd.Function's backward against central finite differences (torch.autograd.gradcheck)."""
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=generator).requires_grad_(True)

    x = tensor(2, 3, 4)
    weights = [tensor(2, 5, 4), tensor(2, 3, 5), tensor(2, 1, 3)]  # (elements, out, in)
    biases = [tensor(2, 1, 5), tensor(2, 1, 3), tensor(2, 1, 1)] if bias else []
    names = (activation, activation)
    assert torch.autograd.gradcheck(lambda x, *p: NetworkAndGradient.apply(x, names, 3, *p), (x, *weights, *biases))
