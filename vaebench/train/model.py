"""The reference workload: the seed's VAE and loss, unchanged in arithmetic."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

IMAGE_PIXELS = 28 * 28
HIDDEN = 400
LATENT = 20
PARAMETERS = 652_824


class VAE(nn.Module):
    """784-400-(2x20) encoder, 20-400-784 decoder, as in the seed's program."""

    def __init__(self, latent_dim: int = LATENT) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(IMAGE_PIXELS, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 2 * latent_dim),  # mean and log-variance side by side
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, IMAGE_PIXELS),
            nn.Sigmoid(),
        )

    def forward(
        self, x: torch.Tensor, noise_rows: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`noise_rows` (a rank of a data-parallel run): (rows of the global batch, this rank's offset
        in it). The noise of the whole global batch is drawn and this rank's rows kept, so every
        sample gets the noise one process on the global batch would draw for it."""
        mu_logvar = self.encoder(x)
        mu, logvar = mu_logvar[:, : self.latent_dim], mu_logvar[:, self.latent_dim :]
        if noise_rows is None:
            noise = torch.randn_like(mu)
        else:
            total, offset = noise_rows
            everyone = torch.randn((total, self.latent_dim), dtype=mu.dtype, device=mu.device)
            noise = everyone[offset : offset + mu.shape[0]]
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Summed binary cross-entropy plus the KL divergence to N(0, I), as the seed computes it."""
    bce = F.binary_cross_entropy(recon, x.view(-1, IMAGE_PIXELS), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def train_flops_per_sample(latent_dim: int = LATENT) -> float:
    """Matmul FLOPs of one sample's forward and backward: backward costs twice the forward."""
    macs = IMAGE_PIXELS * HIDDEN + HIDDEN * 2 * latent_dim + latent_dim * HIDDEN + HIDDEN * IMAGE_PIXELS
    return 3 * 2 * macs


def sample_digits(model: VAE, count: int = 64, seed: int = 0) -> torch.Tensor:
    """Decode `count` draws from the prior into images of shape (count, 1, 28, 28)."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(count, model.latent_dim, generator=generator).to(device)
    with torch.no_grad():
        images: torch.Tensor = model.decoder(z).float().view(-1, 1, 28, 28).cpu()
    return images
