"""Progressive image coding with a diffusion model: one layer per reverse step.

Layer j (j = 0..T-1) carries the universally quantized reverse step from t = (T-j)/T to
s = (T-j-1)/T (see progressive.py); layer T carries the pixels under p(x | z_0), after
which the image is exact. z_1 comes from the seed at zero bits.

Determinism: the entropy model of every symbol is built from the seeded dither and an
integer scale index only, and encoder and decoder run the very same float64 recursion
z_s = mu_P + (k - u) Delta on the same network outputs (same tiling, same code path, and
the same number of CPU threads, stored in the header: BLAS splits its sums by thread
count), so the decoder reproduces the encoder's latents exactly; each layer carries a CRC
of its symbols so a platform that computes the network differently is told, not fooled.
"""

from __future__ import annotations

import contextlib
import copy
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from . import diffusion as dm
from . import entropy, lossless, randomness
from .checkpoint import model_hash
from .container import DfcFile, Header, LayerInfo, pack_file, parse_file
from .errors import DiffcodecError
from .imagetypes import PreparedImage, prepare, restore
from .model import DiffusionModel
from .progressive import step_coefficients

DEFAULT_STEPS = 8
DEFAULT_LOSSLESS_STEPS = 32
MAX_CODING_THREADS = 16
DEFAULT_TILE = 1024
TILE_HALO = 32
MAX_STEPS = 1024


def _progress(iterable, enabled: bool, total: int, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="layer", leave=False, dynamic_ncols=True)


def _row_bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="row", leave=False, dynamic_ncols=True)


class ModelRunner:
    """What the coder needs from a model, computed the same way on both sides:
    gamma on a time grid (float64) and tiled network predictions (returned in float64)."""

    def __init__(self, model: DiffusionModel) -> None:
        self.model = model.eval()
        self.device = model.device
        self.stride = model.config.stride
        self.schedule64 = copy.deepcopy(model.schedule).double().cpu()
        if self.device.type == "cuda":  # same kernels on both sides
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    @torch.no_grad()
    def gammas(self, times: np.ndarray) -> np.ndarray:
        return self.schedule64(torch.from_numpy(np.asarray(times, dtype=np.float64)))[0].numpy()

    @torch.no_grad()
    def predict(self, z: np.ndarray, gamma: float, tile: int, chain: bool = False) -> tuple[np.ndarray, ...]:
        """Network estimates for z (H, W, 3), computed tile by tile, as float64 (H, W, 3)
        arrays: DiffusionModel.progressive_prediction (x_hat in [-1, 1], log-scale of its
        error), or with ``chain`` DiffusionModel.chain_prediction (x_eps, x_progressive,
        log-scale)."""
        height, width, _ = z.shape
        prediction = self.model.chain_prediction if chain else self.model.progressive_prediction
        outputs: list[np.ndarray] = []
        gamma_t = torch.tensor([gamma], dtype=torch.float32, device=self.device)
        halo = TILE_HALO if (height > tile or width > tile) else 0
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                y0, x0 = max(0, top - halo), max(0, left - halo)
                y1, x1 = min(height, top + tile + halo), min(width, left + tile + halo)
                window = torch.from_numpy(np.ascontiguousarray(z[y0:y1, x0:x1].transpose(2, 0, 1)))
                window = window.float().unsqueeze(0).to(self.device)
                results = prediction(window, gamma_t)
                if not outputs:
                    outputs = [np.empty_like(z) for _ in results]
                inner = (slice(top - y0, top - y0 + min(tile, height - top)),
                         slice(left - x0, left - x0 + min(tile, width - left)))
                dest = (slice(top, top + tile), slice(left, left + tile))
                for output, result in zip(outputs, results):
                    output[dest] = result[0].cpu().numpy().transpose(1, 2, 0)[inner]
        return tuple(outputs)


@contextlib.contextmanager
def network_threads(count: int):
    """Run the network with exactly ``count`` CPU threads (the encoder's count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _to_pixels(x_scaled: np.ndarray) -> np.ndarray:
    """Nearest 8-bit level of model-space values."""
    return np.clip(np.rint((x_scaled + 1.0) * 128.0 - 0.5), 0, 255).astype(np.uint8)


@dataclass
class _Step:
    """Everything about one UQ step that both sides derive identically."""

    coef: object  # StepCoefficients of the step
    mu_p: np.ndarray
    x_hat: np.ndarray  # denoised estimate at the step's start time
    dither: np.ndarray
    delta: float
    sigma_q: float
    stds: np.ndarray  # entropy-model scale of every symbol (from the integer table)


class Codec:
    """A loaded model, ready to encode and decode .dfc files.

    ``model`` is a registered name (``"default"``), a checkpoint path or a DiffusionModel.
    """

    def __init__(self, model: str | DiffusionModel | None = None, device: str = "cpu",
                 tile: int = DEFAULT_TILE, chunk_symbols: int = entropy.CHUNK_SYMBOLS) -> None:
        if not isinstance(model, DiffusionModel):
            from .models import load_named_model

            model = load_named_model(model or "default", device)
        self.model = model
        self.runner = ModelRunner(model)
        self.hash_hex = getattr(model, "model_hash", None) or model_hash(model)
        self.hash = bytes.fromhex(self.hash_hex)[:16]
        if tile % self.model.config.stride or not 0 < tile < 2**16:
            raise DiffcodecError(f"tile must be a multiple of {self.model.config.stride} below 65536")
        self.tile = tile
        self.chunk_symbols = chunk_symbols

    # -- shared step ---------------------------------------------------------------------
    def _step(self, z: np.ndarray, header: Header, gammas: np.ndarray, layer: int) -> _Step:
        i = header.steps - layer
        coef = step_coefficients(float(gammas[i]), float(gammas[i - 1]))
        with network_threads(header.threads):
            x_hat, log_scale = self.runner.predict(z, float(gammas[i]), header.tile)
        delta = coef.delta
        stds = entropy.SCALE_TABLE[entropy.scale_index(coef.c * np.exp(log_scale) / delta)]
        dither = randomness.shared_uniform(header.seed, randomness.DITHER, layer, z.size).reshape(z.shape)
        return _Step(coef, coef.b * z + coef.c * x_hat, x_hat, dither, delta, coef.sigma_q, stds)

    @staticmethod
    def _start(header: Header) -> np.ndarray:
        count = header.height * header.width * 3
        return randomness.shared_normal(header.seed, randomness.START, 0, count).reshape(header.height, header.width, 3)


    # -- encoding ------------------------------------------------------------------------
    def encode(self, image, steps: int | None = None, seed: int = 0, mode: str = "progressive",
               progress: bool = False, stored_fallback: bool = True) -> bytes:
        """Encode an image (PIL, array or tensor) into a .dfc file.

        ``mode="progressive"``: one truncatable layer per reverse step (``steps``, default 8).
        ``mode="lossless"``: bits-back coding over a ``steps``-step chain (default 32); where
        zlib does better (noise, images far from the training data) the file stores the
        zlib-compressed pixels instead (mode "stored"), unless ``stored_fallback`` is False.
        """
        if mode not in ("progressive", "lossless"):
            raise DiffcodecError(f"unknown mode {mode!r}: progressive or lossless")
        steps = steps or (DEFAULT_STEPS if mode == "progressive" else DEFAULT_LOSSLESS_STEPS)
        if not 1 <= steps <= MAX_STEPS:
            raise DiffcodecError(f"steps must be between 1 and {MAX_STEPS}")
        prepared: PreparedImage = prepare(image)
        height, width, _ = prepared.rgb.shape
        header = Header(mode=mode, model_name=self.model.config.name, model_hash=self.hash,
                        height=height, width=width, channels=prepared.channels, steps=steps,
                        seed=seed & (2**64 - 1), tile=self.tile, chunk_symbols=self.chunk_symbols,
                        threads=min(torch.get_num_threads(), MAX_CODING_THREADS),
                        alpha_kind=prepared.alpha_kind,
                        alpha=prepared.alpha)
        if mode == "lossless":
            return self._encode_lossless(prepared.rgb, header, progress, stored_fallback)
        gammas = self.runner.gammas(np.arange(steps + 1, dtype=np.float64) / steps)
        x = dm.scale_pixels_array(prepared.rgb)
        z = self._start(header)
        layers, infos = [], []
        for layer in _progress(range(steps), progress, steps + 1, "encode"):
            step = self._step(z, header, gammas, layer)
            mu_q = step.coef.b * z + step.coef.c * x
            k = np.rint((mu_q - step.mu_p) / step.delta + step.dither).astype(np.int32)
            symbols, means, stds = k.reshape(-1), step.dither.reshape(-1), step.stds.reshape(-1)
            low, high = entropy.symbol_range(symbols)
            layers.append(entropy.encode_chunks(symbols, means, stds, low, high, self.chunk_symbols))
            infos.append(LayerInfo(low, high, entropy.checksum(symbols),
                                   round(entropy.ideal_bits(symbols, means, stds, low, high))))
            z = step.mu_p + (k - step.dither) * step.delta
        symbols = prepared.rgb.reshape(-1).astype(np.int32)
        means, stds = dm.pixel_coding_model(z, float(gammas[0]))
        layers.append(entropy.encode_chunks(symbols, means, stds, 0, 255, self.chunk_symbols))
        infos.append(LayerInfo(0, 255, entropy.checksum(symbols),
                               round(entropy.ideal_bits(symbols, means, stds, 0, 255))))
        header.layers = infos
        return pack_file(header, layers)

    # -- lossless ------------------------------------------------------------------------
    def _chain_predictor(self, header: Header, grid: lossless.ChainGrid, below: np.ndarray, band: int):
        """(x_hat, log_scale) for a band at step i, the network seeing ``below`` (pixels of the
        rows under the band, known to both sides) noised to step i with shared noise as context."""
        below_scaled = dm.scale_pixels_array(below)
        noise = randomness.shared_normal(header.seed, randomness.CONTEXT, band, below.size).reshape(below.shape)

        def predict(z: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
            rows = z.shape[0]
            if below.size:
                z = np.concatenate([z, grid.alpha[i] * below_scaled + grid.sigma[i] * noise], axis=0)
            with network_threads(header.threads):
                x_eps, x_progressive, log_scale = self.runner.predict(z, grid.gammas[i], header.tile, chain=True)
            return lossless.band_estimate(x_eps[:rows], x_progressive[:rows]), log_scale[:rows]

        return predict

    def _lossless_grid(self, steps: int, scale_indices: list[int] | None = None) -> lossless.ChainGrid:
        gammas = self.runner.gammas(np.arange(steps + 1, dtype=np.float64) / steps)
        return lossless.ChainGrid(gammas, scale_indices)

    def _noised_predictions(self, x_scaled: np.ndarray, grid: lossless.ChainGrid, i: int, seed: int,
                            purpose: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """x_scaled - x_hat and log_scale at step i for z_i ~ q(z_i | x), flat (encoder side only:
        calibration and the bound; the noise comes from a shared stream for reproducibility)."""
        noise = randomness.shared_normal(seed, purpose, index, x_scaled.size).reshape(x_scaled.shape)
        x_hat, _, log_scale = self.runner.predict(grid.alpha[i] * x_scaled + grid.sigma[i] * noise,
                                                  grid.gammas[i], self.tile, chain=True)
        return (x_scaled - x_hat).reshape(-1), log_scale.reshape(-1)

    def _calibrate_chain(self, rgb: np.ndarray, grid: lossless.ChainGrid, seed: int) -> list[int]:
        """Per-step scale indices of the reverse steps (lossless.fit_scale_index), fitted on
        pilot crops noised to each step; they go into the header."""
        crops = [dm.scale_pixels_array(crop) for crop in lossless.pilot_crops(rgb)]
        indices = []
        for i in range(1, grid.steps + 1):
            pairs = [self._noised_predictions(crop, grid, i, seed, randomness.PILOT, i * len(crops) + k)
                     for k, crop in enumerate(crops)]
            indices.append(lossless.fit_scale_index(grid.reverse[i].c, grid.p_std[i - 1],
                                                    np.concatenate([e for e, _ in pairs]),
                                                    np.concatenate([s for _, s in pairs])))
        return indices

    def lossless_bound(self, image, steps: int | None = None, seed: int = 0) -> dict:
        """The T-step NELBO of the model the lossless coder uses (calibrated reverse steps, the
        coder's x_hat), in bits per dimension: the rate ``encode(mode="lossless")`` aims at.
        Prior and diffusion terms are exact Gaussian KLs, one noise sample per step; the
        reconstruction term uses one sample of z_0. ``fixed_variance_total``: the same with
        VDM's fixed reverse variance, i.e. VDM's T-step NELBO (with x_eps clipped) summed
        over all T steps rather than sampled, so it compares with ``total`` sample for sample."""
        steps = steps or DEFAULT_LOSSLESS_STEPS
        rgb = prepare(image).rgb
        grid = self._lossless_grid(steps)
        grid = self._lossless_grid(steps, self._calibrate_chain(rgb, grid, seed))
        x_scaled = dm.scale_pixels_array(rgb)
        diffusion, fixed = [], []
        for i in range(1, steps + 1):
            error, log_scale = self._noised_predictions(x_scaled, grid, i, seed, randomness.BOUND, i)
            diffusion.append(lossless.step_kl_bits(grid, i, error, log_scale))
            fixed.append(lossless.step_kl_bits(grid, i, error, log_scale, calibrated=False))
        z0 = grid.alpha[0] * x_scaled.reshape(-1) + grid.sigma[0] * randomness.shared_normal(seed, randomness.BOUND, 0, rgb.size)
        terms = dict(prior=lossless.prior_kl_bits(grid, x_scaled), reconstruction=lossless.pixel_bits(grid, rgb, z0),
                     diffusion=float(sum(diffusion)))
        per_dim = {name: bits / rgb.size for name, bits in terms.items()}
        total = sum(per_dim.values())
        return dict(total=total, **per_dim, per_step=[b / rgb.size for b in diffusion],
                    fixed_variance_total=total + (sum(fixed) - terms["diffusion"]) / rgb.size)

    def _encode_lossless(self, rgb: np.ndarray, header: Header, progress: bool, stored_fallback: bool) -> bytes:
        header.chain_scales = self._calibrate_chain(rgb, self._lossless_grid(header.steps), header.seed)
        grid = self._lossless_grid(header.steps, header.chain_scales)
        height, width = header.height, header.width
        stack = lossless.AnsStack()
        bands = [min(height, lossless.DIRECT_ROWS)]
        lossless.encode_direct(stack, rgb[: bands[0]])
        done = bands[0]
        bar = _row_bar(progress, height, done, "encode")
        while done < height:
            rows = lossless.next_band_rows(stack.coder.num_bits(), width, height - done, grid.peak_bits)
            below = rgb[done + rows : done + rows + lossless.CONTEXT_ROWS]
            predict = self._chain_predictor(header, grid, below, len(bands))
            lossless.encode_band(stack, grid, rgb[done : done + rows], predict)
            bands.append(rows)
            done += rows
            if bar is not None:
                bar.update(rows)
        if bar is not None:
            bar.close()
        header.bands = bands
        payload = stack.words().astype("<u4").tobytes()
        stored = zlib.compress(rgb.tobytes(), 9) if stored_fallback else payload
        if len(stored) < len(payload):
            # the model does worse than deflate on this image (noise, graphics far from its
            # training data): never expand it, keep it as zlib-compressed pixels
            header.mode, header.bands, header.chain_scales, payload = "stored", [], [], stored
        header.layers = [LayerInfo(0, 255, entropy.checksum(rgb.reshape(-1)), 8 * len(payload))]
        return pack_file(header, [[payload]])

    def _decode_stored(self, f: DfcFile) -> np.ndarray:
        header = f.header
        if len(header.layers) != 1 or len(f.chunks[0]) != len(header.layers[0].chunk_lengths):
            raise DiffcodecError("truncated or damaged file: a stored file only decodes when complete")
        size = header.height * header.width * 3
        try:
            pixels = zlib.decompressobj().decompress(b"".join(f.chunks[0]), size + 1)
        except zlib.error:
            raise DiffcodecError("damaged file: the stored pixels cannot be decompressed") from None
        if len(pixels) != size:
            raise DiffcodecError("damaged file: the stored pixels do not match the image size")
        rgb = np.frombuffer(pixels, dtype=np.uint8).reshape(header.height, header.width, 3).copy()
        if entropy.checksum(rgb.reshape(-1)) != header.layers[0].crc:
            raise DiffcodecError("image checksum mismatch: the stored file is damaged")
        return rgb

    def _decode_lossless(self, f: DfcFile, progress: bool) -> np.ndarray:
        header = f.header
        if len(header.layers) != 1:
            raise DiffcodecError("damaged file: a lossless file has exactly one layer")
        if len(f.chunks[0]) != len(header.layers[0].chunk_lengths):
            raise DiffcodecError("truncated file: a lossless file only decodes when complete")
        self._check_model(header)
        data = b"".join(f.chunks[0])
        if len(data) % 4:
            raise DiffcodecError("damaged file: the lossless stream is not a whole number of words")
        grid = self._lossless_grid(header.steps, header.chain_scales)
        bands = header.bands
        if not bands or sum(bands) != header.height or min(bands) < 1:
            raise DiffcodecError("damaged file: the band plan does not match the image height")
        stack = lossless.AnsStack(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        decoded: list = [None] * len(bands)
        try:
            for k in _progress(range(len(bands) - 1, 0, -1), progress, len(bands) - 1, "decode"):
                # every band has at least one row: CONTEXT_ROWS bands always cover the context
                later = decoded[k + 1 : k + 1 + lossless.CONTEXT_ROWS]
                below = np.concatenate(later, axis=0)[: lossless.CONTEXT_ROWS] \
                    if later else np.zeros((0, header.width, 3), np.uint8)
                predict = self._chain_predictor(header, grid, below, k)
                decoded[k] = lossless.decode_band(stack, grid, (bands[k], header.width, 3), predict)
            decoded[0] = lossless.decode_direct(stack, (bands[0], header.width, 3))
        except DiffcodecError:
            raise
        except BaseException as exc:  # constriction rejects inconsistent data
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise DiffcodecError("damaged file: the lossless stream cannot be decoded") from None
        rgb = np.concatenate(decoded, axis=0)
        if not stack.coder.is_empty() or entropy.checksum(rgb.reshape(-1)) != header.layers[0].crc:
            raise DiffcodecError("image checksum mismatch: the lossless file is damaged, or was encoded "
                                 "on a machine that computes the model differently")
        return rgb

    # -- decoding ------------------------------------------------------------------------
    def _check_model(self, header: Header) -> None:
        if header.model_hash != self.hash:
            raise DiffcodecError(
                f"this file was encoded with model '{header.model_name}' ({header.model_hash.hex()[:12]}), "
                f"not the loaded model '{self.model.config.name}' ({self.hash_hex[:12]}): pass the right --model")

    def _completion(self, z: np.ndarray, t: float, steps: int, header: Header) -> np.ndarray:
        """Finish the image by ancestral sampling from time t to 0 in ``steps`` steps."""
        times = t * (1.0 - np.arange(steps + 1, dtype=np.float64) / steps)
        gammas = self.runner.gammas(times)
        for n in range(steps):
            coef = step_coefficients(float(gammas[n]), float(gammas[n + 1]))
            x_hat, _ = self.runner.predict(z, float(gammas[n]), header.tile)
            noise = randomness.shared_normal(header.seed, randomness.COMPLETION, n, z.size).reshape(z.shape)
            z = coef.b * z + coef.c * x_hat + coef.sigma_q * noise
        return dm.pixel_mode(z, float(gammas[-1]))

    def _decode_layer(self, f: DfcFile, layer: int, means, stds) -> tuple[np.ndarray, bool]:
        """Symbols of the chunks present of one layer, and whether the layer is complete."""
        info = f.header.layers[layer]
        chunks = f.chunks[layer]
        symbols = entropy.decode_chunks(chunks, means.size, means, stds, info.low, info.high,
                                        f.header.chunk_symbols)
        complete = len(chunks) == len(info.chunk_lengths)
        if complete and entropy.checksum(symbols) != info.crc:
            raise DiffcodecError(
                f"layer {layer + 1} failed its checksum: the file is damaged, or this machine computes "
                "the model differently from the one that encoded it")
        return symbols, complete

    def _images(self, f: DfcFile, max_layers: int, completion_steps: int, every_layer: bool,
                progress: bool) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (layers used, RGB image); with ``every_layer`` after each layer, else once at the end."""
        header = f.header
        steps = header.steps
        if len(header.layers) != steps + 1:
            raise DiffcodecError("damaged file: the layer count does not match the step count")
        self._check_model(header)
        gammas = self.runner.gammas(np.arange(steps + 1, dtype=np.float64) / steps)

        def show(z, x_hat, i):
            if i == 0:
                return dm.pixel_mode(z, float(gammas[0]))
            if completion_steps > 0:
                return self._completion(z, i / steps, completion_steps, header)
            return _to_pixels(x_hat)

        z = self._start(header)
        for layer in _progress(range(steps), progress, steps + 1, "decode"):
            i = steps - layer
            step = self._step(z, header, gammas, layer)
            if every_layer:
                yield layer, show(z, step.x_hat, i)
            if layer >= max_layers or not f.chunks[layer]:
                if not every_layer:
                    yield layer, show(z, step.x_hat, i)
                return
            symbols, complete = self._decode_layer(f, layer, step.dither.reshape(-1), step.stds.reshape(-1))
            if not complete:  # use what arrived; the rest falls back to the model's prediction
                received = np.zeros(z.size, dtype=bool)
                received[: symbols.size] = True
                k = np.zeros(z.size)
                k[: symbols.size] = symbols
                z_new = step.mu_p + (k.reshape(z.shape) - step.dither) * step.delta
                if completion_steps > 0:
                    noise = randomness.shared_normal(header.seed, randomness.COMPLETION, 10**6, z.size)
                    fallback = step.mu_p + step.sigma_q * noise.reshape(z.shape)
                    z_new = np.where(received.reshape(z.shape), z_new, fallback)
                    yield layer + 1, self._completion(z_new, (i - 1) / steps, completion_steps, header)
                    return
                if i - 1 == 0:
                    new = dm.pixel_mode(z_new, float(gammas[0]))
                else:
                    new = _to_pixels(self.runner.predict(z_new, float(gammas[i - 1]), header.tile)[0])
                yield layer + 1, np.where(received.reshape(z.shape), new, _to_pixels(step.x_hat))
                return
            z = step.mu_p + (symbols.reshape(z.shape) - step.dither) * step.delta
        # Final layer: the pixels themselves under p(x | z_0).
        fallback = dm.pixel_mode(z, float(gammas[0]))
        if every_layer or max_layers <= steps or not f.chunks[steps]:
            yield steps, fallback
        if max_layers <= steps or not f.chunks[steps]:
            return
        means, stds = dm.pixel_coding_model(z, float(gammas[0]))
        symbols, complete = self._decode_layer(f, steps, means, stds)
        pixels = fallback.reshape(-1).copy()
        pixels[: symbols.size] = symbols
        yield steps + 1, pixels.reshape(z.shape)

    def decode(self, data: bytes, layers: int | None = None, max_bytes: int | None = None,
               completion_steps: int = 0, progress: bool = False) -> np.ndarray:
        """Decode a .dfc file or any prefix of one.

        ``layers``: use at most this many complete layers (default: everything present,
        including the complete chunks of a cut layer). ``max_bytes``: use only the first
        bytes of ``data``. ``completion_steps``: reverse diffusion steps run after the last
        layer used (0 = the denoised estimate). Returns (H, W[, C]) uint8.
        """
        f = parse_file(data[:max_bytes] if max_bytes is not None else data)
        if f.header.mode in ("lossless", "stored"):
            rgb = self._decode_lossless(f, progress) if f.header.mode == "lossless" else self._decode_stored(f)
            return restore(rgb, f.header.channels, f.header.alpha_kind, f.header.alpha)
        limit = len(f.header.layers) if layers is None else layers
        if layers is not None:  # whole layers only
            f.chunks = [c if n < layers else [] for n, c in enumerate(f.chunks)]
        (_, rgb), = self._images(f, limit, completion_steps, every_layer=False, progress=progress)
        return restore(rgb, f.header.channels, f.header.alpha_kind, f.header.alpha)

    def decode_every_layer(self, data: bytes, completion_steps: int = 0) -> list[np.ndarray]:
        """The image after 0, 1, ..., L complete layers, in one pass over the chain."""
        f = parse_file(data)
        if f.header.mode != "progressive":
            raise DiffcodecError("only progressive files have layers to show")
        images = [rgb for _, rgb in self._images(f, len(f.header.layers), completion_steps, True, False)]
        return [restore(rgb, f.header.channels, f.header.alpha_kind, f.header.alpha) for rgb in images]
