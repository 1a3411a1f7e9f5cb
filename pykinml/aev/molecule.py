"""The AEV of one small molecule over all its pairs and triples, and the exact gradient of an energy through it.

What the ASE calculator runs per call. A call on a 10-atom molecule is a few hundred microseconds of
arithmetic, but the batched kernels (:mod:`pykinml.aev.compute`) spend milliseconds around it: neighbour
search, triple enumeration and autograd's graph, each a few microseconds per small operation. Between calls
of a calculator only the positions change, so here every index (pairs, triples, AEV blocks) is built once
for the molecule's atoms, atoms beyond a cutoff drop out through f_c = 0, and the gradient is written out
by hand (the chain rule below) instead of recorded. Same definition and layout as the batched kernels;
tests compare both, and the gradient with autograd and finite differences.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pykinml.aev.compute import cutoff_and_slope
from pykinml.aev.jacobian import pair_blocks
from pykinml.aev.params import AEVConstants
from pykinml.fast_math import decaying_exp, power


class MoleculeAEV:
    """AEVs (N, D) of one open-boundary molecule of fixed atoms, and ∂E/∂x from ∂E/∂G (:meth:`gradient`).

    ``species`` (N,) are the atoms' element indices. Cost grows as N³ (every triple), so it suits molecules
    of a few tens of atoms; larger systems and periodic cells take the neighbour-list kernels.
    """

    def __init__(self, constants: AEVConstants, species: Tensor, dtype: torch.dtype, device: torch.device | str = "cpu"):
        c = self.constants = constants
        species = species.to(device=device, dtype=torch.int64)
        n = self.n_atoms = int(species.numel())
        n_el = c.n_elements
        self.n_pairs = n_el * (n_el + 1) // 2
        self.species = species
        self.one_hot = torch.nn.functional.one_hot(species, n_el).to(dtype)  # (N, n_el)
        # r_ii is set beyond both cutoffs, so f_c drops an atom's pair with itself and û_ii = 0.
        self.self_distance2 = torch.eye(n, dtype=dtype, device=device) * (2.0 * max(c.radial_cutoff, c.angular_cutoff)) ** 2
        # Triples (i; j < k), j and k other than i, as flat indices of the (N, N) pair arrays, in slots: per pair
        # of elements p (the AEV's angular blocks), N rows (one per centre i) of widths[p] slots each, enough
        # for the centre with most such triples. A padding slot holds the pair (0, 0), whose f_c = 0 zeroes its
        # terms and its gradient.
        i, j, k = torch.meshgrid(*(torch.arange(n, device=device),) * 3, indexing="ij")
        chosen = (j < k) & (j != i) & (k != i)
        i, j, k = i[chosen], j[chosen], k[chosen]  # sorted by i
        block = pair_blocks(n_el, device)[species[j], species[k]]
        self.widths: list[int] = []
        first, second = [], []
        for p in range(self.n_pairs):
            mine = block == p
            center, counts = i[mine], torch.bincount(i[mine], minlength=n)
            width = int(counts.max()) if center.numel() else 0
            slot = center * width + torch.arange(center.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[center]
            first.append(torch.zeros(n * width, dtype=torch.int64, device=device).index_put_((slot,), (i * n + j)[mine]))
            second.append(torch.zeros(n * width, dtype=torch.int64, device=device).index_put_((slot,), (i * n + k)[mine]))
            self.widths.append(width)
        self.first, self.second = torch.cat(first), torch.cat(second)
        self.radial_shifts = torch.tensor(c.radial_shifts, dtype=dtype, device=device)
        self.angular_shifts = torch.tensor(c.angular_shifts, dtype=dtype, device=device)
        self.sections = torch.tensor(c.angle_sections, dtype=dtype, device=device)

    def forward(self, positions: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """AEVs (B, N, D) at ``positions`` (B, N, 3), B conformations of the molecule, and what :meth:`gradient` needs."""
        c, n = self.constants, self.n_atoms
        b = positions.shape[0]
        vectors = positions[:, None, :, :] - positions[:, :, None, :]  # [b, i, j] = x_j − x_i
        r = torch.sqrt((vectors * vectors).sum(-1) + self.self_distance2)
        unit = vectors / r[..., None]
        # Radial: G^R[i, el(j), m] = Σ_j g(r_ij)_m, a product with the one-hot elements of j.
        offset = r[..., None] - self.radial_shifts  # (B, N, N, n_rad)
        gauss = c.radial_scale * decaying_exp(-c.radial_eta * offset * offset)
        fc_r, dfc_r = cutoff_and_slope(r, c.radial_cutoff)
        radial = torch.matmul((gauss * fc_r[..., None]).transpose(-1, -2), self.one_hot)  # (B, N, n_rad, n_el)
        # Angular, per triple t = (i; j, k).
        unit_flat, r_flat = unit.view(b, n * n, 3), r.view(b, -1)
        u1, u2 = unit_flat[:, self.first], unit_flat[:, self.second]
        r1, r2 = r_flat[:, self.first], r_flat[:, self.second]
        cos = (u1 * u2).sum(-1)
        scaled = torch.clamp(c.beta * cos, -1.0, 1.0)
        apart = torch.acos(scaled)[..., None] - self.sections  # θ − α_l, (B, T, n_ang)
        half = 0.5 + 0.5 * torch.cos(apart)
        half_pow = power(half, c.zeta - 1)
        angle = half_pow * half
        fc_a, dfc_a = cutoff_and_slope(r, c.angular_cutoff)
        fc_a_flat = fc_a.view(b, -1)
        fc1, fc2 = fc_a_flat[:, self.first], fc_a_flat[:, self.second]
        cut = c.angular_scale * fc1 * fc2
        mean_offset = (0.5 * (r1 + r2))[..., None] - self.angular_shifts  # (B, T, n_rho)
        shell = decaying_exp(-c.angular_eta * mean_offset * mean_offset)
        weight = shell * cut[..., None]
        # Each angular block of each centre sums weight ⊗ angle over its triples: one matrix product per row.
        blocks, start = [], 0
        for width in self.widths:
            if width == 0:  # no such pair of elements in this molecule
                blocks.append(weight.new_zeros((b, n, shell.shape[-1] * angle.shape[-1])))
                continue
            rows = slice(start, start + n * width)
            start += n * width
            block = torch.bmm(weight[:, rows].reshape(b * n, width, -1).transpose(1, 2), angle[:, rows].reshape(b * n, width, -1))
            blocks.append(block.view(b, n, -1))
        angular = torch.stack(blocks, dim=2)  # (B, N, n_pairs, A)
        aev = torch.cat([radial.transpose(-1, -2).reshape(b, n, -1), angular.view(b, n, -1)], dim=-1)
        saved = {
            "r": r, "unit": unit, "u1": u1, "u2": u2, "offset": offset, "gauss": gauss, "fc_r": fc_r,
            "dfc_r": dfc_r, "dfc_a": dfc_a, "fc1": fc1, "fc2": fc2, "cut": cut, "scaled": scaled, "apart": apart,
            "half_pow": half_pow, "angle": angle, "mean_offset": mean_offset, "shell": shell, "weight": weight,
        }
        return aev, saved

    def gradient(self, saved: dict[str, Tensor], dE_dG: Tensor) -> Tensor:
        """∂E/∂x (B, N, 3) from ∂E/∂G (B, N, D) at the positions :meth:`forward` saved."""
        c, n = self.constants, self.n_atoms
        b = dE_dG.shape[0]
        n_el, n_rad = c.n_elements, len(c.radial_shifts)
        n_rho, n_ang = len(c.angular_shifts), len(c.angle_sections)
        d_radial = dE_dG[..., : n_el * n_rad].reshape(b, n, n_el, n_rad)[:, :, self.species, :]  # (B, N, N, n_rad)
        d_angular = dE_dG[..., n_el * n_rad :].reshape(b, n, self.n_pairs, n_rho, n_ang)
        s = saved
        # ∂E/∂r_ij, first the radial terms.
        slope = s["gauss"] * (s["dfc_r"][..., None] - 2 * c.radial_eta * s["offset"] * s["fc_r"][..., None])
        d_r = (d_radial * slope).sum(-1).view(b, -1)
        # Angular terms: weight (B, T, n_rho) ⊗ angle (B, T, n_ang), summed per row of triple slots.
        d_weight, d_angle, start = [], [], 0
        for p, width in enumerate(self.widths):
            if width == 0:
                continue
            rows = slice(start, start + n * width)
            start += n * width
            d_block = d_angular[:, :, p].reshape(b * n, n_rho, n_ang)
            d_weight.append(torch.bmm(s["angle"][:, rows].reshape(b * n, width, n_ang), d_block.transpose(1, 2)).view(b, -1, n_rho))
            d_angle.append(torch.bmm(s["weight"][:, rows].reshape(b * n, width, n_rho), d_block).view(b, -1, n_ang))
        if not d_weight:  # no triples (two atoms)
            d_weight, d_angle = [dE_dG.new_zeros((b, 0, n_rho))], [dE_dG.new_zeros((b, 0, n_ang))]
        d_weight, d_angle = torch.cat(d_weight, dim=1), torch.cat(d_angle, dim=1)
        by_shell = d_weight * s["shell"]
        d_cut = c.angular_scale * by_shell.sum(-1)
        d_mean = -c.angular_eta * (by_shell * s["mean_offset"]).sum(-1) * s["cut"]  # ½·∂/∂mean, each of r1, r2
        dfc_a = s["dfc_a"].view(b, -1)
        d_r = d_r.index_add(1, self.first, d_mean + d_cut * s["fc2"] * dfc_a[:, self.first])
        d_r = d_r.index_add(1, self.second, d_mean + d_cut * s["fc1"] * dfc_a[:, self.second])
        # ∂/∂θ of [½ + ½cos(θ − α)]^ζ, then θ = acos(β cos) (derivative 0 where the clamp holds).
        d_theta = (d_angle * s["half_pow"] * torch.sin(s["apart"])).sum(-1) * (-0.5 * c.zeta)
        room = 1.0 - s["scaled"] ** 2
        d_cos = d_theta * torch.where(room > 0, -c.beta / torch.sqrt(torch.where(room > 0, room, torch.ones_like(room))),
                                      torch.zeros_like(room))
        # cos = û_ij·û_ik: ∂/∂û_ij = cos'·û_ik, ∂/∂û_ik = cos'·û_ij.
        d_unit = torch.zeros((b, n * n, 3), dtype=dE_dG.dtype, device=dE_dG.device)
        d_unit.index_add_(1, self.first, d_cos[..., None] * s["u2"]).index_add_(1, self.second, d_cos[..., None] * s["u1"])
        d_unit = d_unit.view(b, n, n, 3)
        unit, r = s["unit"], s["r"]
        # û = v/r: ∂E/∂v = (∂E/∂û − (∂E/∂û·û)û)/r + ∂E/∂r û, and v_ij = x_j − x_i.
        d_vectors = (d_unit - (d_unit * unit).sum(-1, keepdim=True) * unit) / r[..., None] + d_r.view(b, n, n)[..., None] * unit
        return d_vectors.sum(1) - d_vectors.sum(2)
