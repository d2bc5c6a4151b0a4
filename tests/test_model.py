"""The diffusion model and its NELBO."""

import math

import numpy as np
import pytest
import torch

from diffcodec.model import diffusion as dm
from diffcodec.train.evaluation import image_nelbo
from diffcodec.model import ModelConfig
from diffcodec.model import DiffusionModel
from diffcodec.model.schedule import LearnedSchedule

from conftest import randomize_output, tiny_config


def test_nelbo_matches_hand_computation():
    """Fresh model predicts eps = 0, so every term has a closed form we compute in numpy."""
    model = DiffusionModel(tiny_config(schedule="fixed_linear", gamma_min=-6.0, gamma_max=4.0))
    x = torch.tensor([[[[0, 255], [128, 7]], [[1, 2], [3, 4]], [[200, 100], [50, 25]]]], dtype=torch.uint8)
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=generator)
    decoder_noise = torch.randn(x.shape, generator=generator)
    terms = model.nelbo(x, t=torch.tensor([0.3]), noise=noise, decoder_noise=decoder_noise)

    xs = (x.numpy().astype(np.float64) + 0.5) / 128 - 1
    d = xs.size
    sig = lambda v: 1 / (1 + np.exp(-v))
    g0, g1 = -6.0, 4.0
    prior = 0.5 * np.sum(sig(g1) + sig(-g1) * xs**2 - 1 - np.log(sig(g1)))
    z0 = np.sqrt(sig(-g0)) * xs + np.sqrt(sig(g0)) * decoder_noise.numpy().astype(np.float64)
    levels = (np.arange(256) + 0.5) / 128 - 1
    logits = -0.5 * np.exp(-g0) * (z0[..., None] / np.sqrt(sig(-g0)) - levels) ** 2
    log_norm = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, x.numpy().astype(np.int64)[..., None], -1)[..., 0]
    recon = np.sum(log_norm - picked)
    diffusion = 0.5 * (g1 - g0) * np.sum(noise.numpy().astype(np.float64) ** 2)
    to_bpd = 1 / (d * math.log(2))

    assert terms.prior.item() == pytest.approx(prior * to_bpd, rel=1e-4, abs=1e-7)
    assert terms.reconstruction.item() == pytest.approx(recon * to_bpd, rel=1e-4)
    assert terms.diffusion.item() == pytest.approx(diffusion * to_bpd, rel=1e-5)
    assert torch.isfinite(terms.total).all()


def test_windowed_reconstruction_equals_full_softmax():
    generator = torch.Generator().manual_seed(0)  # its own draws: the outcome must not depend on test order
    for gamma_0 in (-13.3, -9.0, -4.0, 1.0):
        g = torch.full((2,), gamma_0)
        x = torch.randint(0, 256, (2, 3, 5, 7), generator=generator)
        z0 = dm.diffuse(dm.scale_pixels(x), g, torch.randn(x.shape, generator=generator))
        full = -torch.log_softmax(dm.decoder_logits(z0, g).double(), -1)
        full = full.gather(-1, x.long().unsqueeze(-1)).flatten(1).sum(1)
        # float32 against float64: near gamma_min the NLL is ~0.01 nats, known to a few 1e-7 absolutely
        assert torch.allclose(dm.reconstruction_nll(x, z0, g).double(), full, rtol=1e-5, atol=2e-6)


def test_learned_schedule_endpoints_monotone_and_derivative():
    schedule = LearnedSchedule(-13.3, 5.0)
    with torch.no_grad():
        schedule.w3.fill_(2.0)  # make it clearly non-linear
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    schedule = schedule.double()
    gamma, dgamma = schedule(t)
    assert gamma[0].item() == pytest.approx(-13.3) and gamma[-1].item() == pytest.approx(5.0)
    assert (gamma.diff() > 0).all() and (dgamma > 0).all()
    h = 1e-6
    numeric = (schedule(t[1:-1] + h)[0] - schedule(t[1:-1] - h)[0]) / (2 * h)
    assert torch.allclose(numeric, dgamma[1:-1], rtol=1e-5)


def test_t_step_nelbo_approaches_continuous(tiny_model):
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    # Times on every grid i/T used below (just under them: a T-step bound evaluates the step
    # that ends above t), so both bounds query the network at the same t.
    t = torch.tensor([0.25, 0.5, 0.75, 0.875])
    gen = torch.Generator().manual_seed(2)
    noise, decoder_noise = torch.randn(x.shape, generator=gen), torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        continuous = tiny_model.nelbo(x, t=t, noise=noise, decoder_noise=decoder_noise).total
        gaps = []
        for steps in (8, 32, 256, 4096):
            discrete = tiny_model.nelbo(x, t=torch.nextafter(t, torch.zeros(())), steps=steps, noise=noise,
                                        decoder_noise=decoder_noise).total
            gaps.append((discrete - continuous).abs().max().item())
    # T (exp(span/T) - 1) = span (1 + span/(2T) + ...): the gap shrinks like 1/T.
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[2] / gaps[3] > 8
    assert gaps[-1] < 3e-3 * continuous.abs().max().item()


def test_variance_gradient_is_gradient_of_squared_loss():
    """The one-pass schedule update equals d mean(L^2)/d eta computed directly."""
    torch.manual_seed(0)
    model = randomize_output(DiffusionModel(tiny_config()))
    with torch.no_grad():
        model.schedule.w3.fill_(0.5)
    x = torch.randint(0, 256, (3, 3, 6, 6))
    kwargs = dict(t=torch.tensor([0.2, 0.5, 0.9]), noise=torch.randn(x.shape), decoder_noise=torch.randn(x.shape))
    params = list(model.schedule.parameters())

    loss = model.nelbo(x, **kwargs).total
    direct = torch.autograd.grad((loss**2).mean(), params)

    box = [None]
    loss = model.nelbo(x, variance_box=box, **kwargs).total
    box[0] = 2 * loss.detach()
    routed = torch.autograd.grad(loss.mean(), params)
    for a, b in zip(direct, routed):
        assert (a - b).norm() <= 1e-3 * a.norm() + 1e-8


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (33, 65)])
def test_any_image_size(tiny_model, shape):
    x = torch.randint(0, 256, (2, 3) + shape)
    with torch.no_grad():
        eps = tiny_model.predict_noise(dm.scale_pixels(x), torch.zeros(2))
        terms = tiny_model.nelbo(x, generator=torch.Generator().manual_seed(0))
    assert eps.shape == x.shape
    assert torch.isfinite(terms.total).all()


def test_default_architecture_any_size():
    """The default U-Net (stride 16) pads and crops odd sizes correctly."""
    model = DiffusionModel(ModelConfig())
    for shape in [(1, 1), (7, 13), (33, 65)]:
        with torch.no_grad():
            eps = model.predict_noise(torch.zeros((1, 3) + shape), torch.zeros(1))
        assert eps.shape == (1, 3) + shape


def test_evaluation_is_reproducible(tiny_model):
    image = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    first = image_nelbo(tiny_model, image, samples=4, seed=5)
    second = image_nelbo(tiny_model, image, samples=4, seed=5, max_batch_pixels=99)
    assert first.total == pytest.approx(second.total, rel=1e-6)
    assert math.isfinite(first.total)
    assert first.total == pytest.approx(first.prior + first.reconstruction + first.diffusion)
