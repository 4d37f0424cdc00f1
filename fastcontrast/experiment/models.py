"""The networks of the two-stage study (sizes as in the original experiment).

    encoder    x → Linear(in, 256) → act → Linear(256, 256) → act → L2-normalize   = r
    projector  r → Linear(256, 128) → act → Linear(128, 128) → act → L2-normalize  = z
    stage 1: the contrastive loss is computed on z; stage 2: a linear softmax classifier
    is trained on the frozen r. The baseline is encoder + linear classifier trained end
    to end with cross-entropy.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}


class UnitNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=1e-12)


def mlp(sizes: list[int], activation: str, normalize: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    if normalize:
        layers.append(UnitNorm())
    return nn.Sequential(*layers)


def encoder(in_features: int, hidden: int = 256, activation: str = "relu") -> nn.Sequential:
    return mlp([in_features, hidden, hidden], activation, normalize=True)


def projector(hidden: int = 256, projection_dim: int = 128, activation: str = "relu") -> nn.Sequential:
    return mlp([hidden, 128, projection_dim], activation, normalize=True)


class Baseline(nn.Module):
    """The encoder with a linear classifier on top, trained directly with cross-entropy."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256,
                 activation: str = "relu"):
        super().__init__()
        self.encoder = encoder(in_features, hidden, activation)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))
