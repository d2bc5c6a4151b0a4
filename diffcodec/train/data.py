"""Training data: random crops with horizontal flips, sampled from images in memory."""

from __future__ import annotations

import numpy as np
import torch


class CropSampler:
    """Draws batches of random crops (uint8, N C H W) from a list of H W C arrays.

    Images are picked with probability proportional to their area, so every pixel of the
    dataset is equally likely to be seen; images smaller than the crop are edge-padded.
    The generator's state is exposed so a resumed run continues the same stream.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int = 0) -> None:
        if not images:
            raise ValueError("CropSampler needs at least one image")
        self.crop = crop
        self.images = [self._pad(np.ascontiguousarray(image), crop) for image in images]
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _pad(image: np.ndarray, crop: int) -> np.ndarray:
        pad_h, pad_w = max(0, crop - image.shape[0]), max(0, crop - image.shape[1])
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return image

    def sample(self, batch_size: int) -> torch.Tensor:
        crop = self.crop
        out = np.empty((batch_size, crop, crop, self.images[0].shape[2]), dtype=np.uint8)
        picks = self.rng.choice(len(self.images), size=batch_size, p=self.weights)
        for row, index in enumerate(picks):
            image = self.images[index]
            top = self.rng.integers(0, image.shape[0] - crop + 1)
            left = self.rng.integers(0, image.shape[1] - crop + 1)
            patch = image[top : top + crop, left : left + crop]
            out[row] = patch[:, ::-1] if self.rng.random() < 0.5 else patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size part (the whole image if it is smaller); 0 = whole image."""
    if size <= 0:
        return image
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(image[top : top + size, left : left + size])
