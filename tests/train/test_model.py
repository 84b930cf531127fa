"""vaebench's model against a verbatim copy of the seed's model and loss."""

from __future__ import annotations

import torch
import torch.nn as nn

from vaebench.train.model import PARAMETERS, VAE, train_flops_per_sample, vae_loss

latent_dim = 20


# ---- the seed's code, copied from ../shared/seed (comments translated) ----
class SeedVAE(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 400),
            nn.ReLU(),
            nn.Linear(400, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 400),
            nn.ReLU(),
            nn.Linear(400, 28 * 28),
            nn.Sigmoid(),
        )

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def forward(self, x):
        mu_logvar = self.encoder(x)
        mu, logvar = mu_logvar[:, :latent_dim], mu_logvar[:, latent_dim:]
        z = self.reparameterize(mu, logvar)
        return self.decoder(z), mu, logvar


def seed_loss_function(recon_x, x, mu, logvar):
    BCE = nn.functional.binary_cross_entropy(recon_x, x.view(-1, 28 * 28), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD
# ---- end of the seed's code ----


def test_parameter_count_and_default_init_match_the_seed() -> None:
    torch.manual_seed(3)
    ours = VAE()
    torch.manual_seed(3)
    seed = SeedVAE(latent_dim)
    assert sum(p.numel() for p in ours.parameters()) == PARAMETERS == 652_824
    for a, b in zip(ours.state_dict().values(), seed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_same_weights_and_batches_give_same_losses_and_gradients() -> None:
    torch.manual_seed(0)
    ours = VAE()
    seed = SeedVAE(latent_dim)
    seed.load_state_dict(ours.state_dict())
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-3)
    opt_seed = torch.optim.Adam(seed.parameters(), lr=1e-3)
    batches = torch.rand(3, 32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for batch in batches:
        losses = []
        for model, optimizer, loss_fn in ((ours, opt_ours, vae_loss), (seed, opt_seed, seed_loss_function)):
            torch.manual_seed(7)  # the same sampling noise for both
            optimizer.zero_grad()
            recon, mu, logvar = model(batch)
            loss = loss_fn(recon, batch, mu, logvar)
            loss.backward()
            losses.append(loss.item())
        assert losses[0] == losses[1]
        for p, q in zip(ours.parameters(), seed.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
        opt_ours.step()
        opt_seed.step()


def test_flops_per_sample_counts_three_passes_of_the_four_matmuls() -> None:
    macs = 784 * 400 + 400 * 40 + 20 * 400 + 400 * 784
    assert train_flops_per_sample() == 6 * macs
