"""Noise schedules gamma(t) = -log SNR(t), monotone increasing on t in [0, 1].

Both schedules return gamma and its time derivative together: the continuous-time
diffusion loss is weighted by gamma'(t), and computing it in closed form keeps the
loss a plain function of the parameters (no nested autograd).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import exact
from .config import ModelConfig


class FixedLinearSchedule(nn.Module):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) t."""

    def __init__(self, gamma_min: float, gamma_max: float) -> None:
        super().__init__()
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        span = self.gamma_max - self.gamma_min
        return self.gamma_min + span * t, torch.full_like(t, span)

    def portable(self, t: np.ndarray) -> np.ndarray:
        """gamma(t) in float64 with the same bits on every machine (the coders' schedule)."""
        return self.gamma_min + (self.gamma_max - self.gamma_min) * np.asarray(t, dtype=np.float64)


class LearnedSchedule(nn.Module):
    """A monotone network with fixed endpoints gamma(0)=gamma_min, gamma(1)=gamma_max.

    h(t) = |w1| t + b1 + mean_j |w3_j| sigmoid(|w2_j| t + b2_j) is increasing in t because
    every weight on the path from t is kept positive; gamma rescales h to the endpoints.
    With fixed endpoints the continuous-time ELBO does not depend on the shape of gamma,
    so the shape is trained to minimise the variance of the loss estimate (VDM).
    """

    def __init__(self, gamma_min: float, gamma_max: float, hidden: int = 1024) -> None:
        super().__init__()
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)
        self.w1 = nn.Parameter(torch.ones(()))
        self.b1 = nn.Parameter(torch.zeros(()))
        # drawn on the CPU, then moved to the default device: a draw made on the meta device
        # (checkpoint.py checks a file's shapes on it) would import torch's compiler (~1.5 s)
        generator = torch.Generator().manual_seed(0)
        device = torch.empty(()).device  # the default device, a `with torch.device(...)` one too
        self.w2 = nn.Parameter((torch.randn(hidden, generator=generator, device="cpu").abs() * 4).to(device))
        self.b2 = nn.Parameter((torch.randn(hidden, generator=generator, device="cpu") * 2).to(device))
        self.w3 = nn.Parameter(torch.full((hidden,), 1e-3))

    def _h(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w2, w3 = self.w2.abs(), self.w3.abs()
        s = torch.sigmoid(t.unsqueeze(-1) * w2 + self.b2)
        h = self.w1.abs() * t + self.b1 + (w3 * s).mean(-1)
        dh = self.w1.abs() + (w3 * w2 * s * (1 - s)).mean(-1)
        return h, dh

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ends, _ = self._h(torch.tensor([0.0, 1.0], device=t.device, dtype=t.dtype))
        h, dh = self._h(t)
        scale = (self.gamma_max - self.gamma_min) / (ends[1] - ends[0])
        return self.gamma_min + (h - ends[0]) * scale, dh * scale


    def portable(self, t: np.ndarray) -> np.ndarray:
        """gamma(t) in float64 with the same bits on every machine (the coders' schedule):
        the portable sigmoid of exact.py and a fixed summation order."""
        t = np.asarray(t, dtype=np.float64)
        w1, b1 = abs(float(self.w1.detach())), float(self.b1.detach())
        w2, b2, w3 = (p.detach().double().cpu().numpy() for p in (self.w2, self.b2, self.w3))
        w2, w3 = np.abs(w2), np.abs(w3)

        def h(v: np.ndarray) -> np.ndarray:
            s = exact.sigmoid(v[:, None] * w2 + b2)
            return w1 * v + b1 + exact.tree_sum(w3 * s) / w3.size

        ends = h(np.array([0.0, 1.0]))
        scale = (self.gamma_max - self.gamma_min) / (ends[1] - ends[0])
        return self.gamma_min + (h(t.reshape(-1)) - ends[0]) * scale


def build_schedule(config: ModelConfig) -> nn.Module:
    if config.schedule == "fixed_linear":
        return FixedLinearSchedule(config.gamma_min, config.gamma_max)
    return LearnedSchedule(config.gamma_min, config.gamma_max)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a per-example factor."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, factor_box: list) -> torch.Tensor:  # type: ignore[override]
        ctx.factor_box = factor_box
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        factor = ctx.factor_box[0]
        return grad * factor.to(grad.dtype), None


def variance_gradient(value: torch.Tensor, factor_box: list) -> torch.Tensor:
    """Route gradients of ``value`` (gamma of each example) so they minimise E[L^2].

    The schedule parameters only reach the loss through gamma(t_i) and gamma'(t_i);
    scaling the incoming gradient of example i by 2 L_i turns d mean(L)/d eta into
    d mean(L^2)/d eta, the VDM variance-minimising update, in the same backward pass.
    ``factor_box[0]`` is filled with 2 L_i (detached) after the loss is known.
    """
    return _ScaleGradient.apply(value, factor_box)
