"""Small image models for the vision experiments (28x28 grey images, CPU-sized).

* :class:`MLP`: fully connected ReLU network (the paper's 784-256-128-10 by default).
* :class:`ConvNet`: a two-block convolutional trunk and one linear head per task.

Both take inputs ``[N, 1, 28, 28]`` already normalised (see
:func:`torchbloop.experiments.data.vision_batches.normalize`).

Example:
    >>> net = ConvNet(heads=(10, 3))
    >>> [tuple(t.shape) for t in net(torch.zeros(2, 1, 28, 28))]
    [(2, 10), (2, 3)]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data.vision_batches import ImageSet, normalize

__all__ = ["MLP", "ConvNet", "classification_metrics", "forward_in_chunks"]


class MLP(nn.Module):
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]`` with ReLU between layers.

    Args:
        sizes: layer widths, input first (default: the paper's 784-256-128-10).

    Example:
        >>> mlp = MLP()
        >>> [tuple(w.shape) for w in mlp.weight_matrices()]
        [(256, 784), (128, 256), (10, 128)]
    """

    def __init__(self, sizes: Sequence[int] = (784, 256, 128, 10)) -> None:
        super().__init__()
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"Invalid sizes={tuple(sizes)}: need at least two positive widths")
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def weight_matrices(self) -> list[Tensor]:
        """The weight matrix of each layer (biases excluded), input layer first."""
        return [layer.weight for layer in self.layers if isinstance(layer, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, sizes[-1]]`` of a batch ``[N, ...]`` (flattened)."""
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


class ConvNet(nn.Module):
    """Two stride-2 3x3 convolutions (28 -> 14 -> 7) with ReLU, a hidden layer, one head per task.

    Strided convolutions instead of pooling keep a step about 4x cheaper on a CPU (measured:
    about 30 steps/s at batch 128 with two backward passes, one thread, 0.1 M parameters).

    Args:
        heads: number of classes of each head; ``forward`` returns one logit tensor per head.
        channels: output channels of the two convolutions.
        hidden: width of the shared fully connected layer after the convolutions.
    """

    def __init__(
        self, heads: Sequence[int] = (10,), channels: tuple[int, int] = (16, 32), hidden: int = 64
    ) -> None:
        super().__init__()
        if not heads or any(h < 1 for h in heads):
            raise ValueError(
                f"Invalid heads={tuple(heads)}: need at least one head with >= 1 class"
            )
        c1, c2 = channels
        self.trunk = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(hidden, h) for h in heads)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """One logit tensor ``[N, heads[i]]`` per head."""
        features = self.trunk(x)
        return tuple(head(features) for head in self.heads)


def forward_in_chunks(model: nn.Module, images: Tensor, chunk: int = 2000) -> tuple[Tensor, ...]:
    """``model(images)`` evaluated ``chunk`` rows at a time, outputs concatenated (as a tuple).

    Keeps the memory of an evaluation pass small; a model returning one tensor gives a 1-tuple.

    Example:
        >>> [tuple(t.shape) for t in forward_in_chunks(MLP(), torch.zeros(5, 1, 28, 28), chunk=2)]
        [(5, 10)]
    """
    if chunk < 1:
        raise ValueError(f"Invalid chunk={chunk}: must be >= 1")
    parts: list[tuple[Tensor, ...]] = []
    for x in images.split(chunk):
        out = model(x)
        parts.append(out if isinstance(out, tuple) else (out,))
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))


def classification_metrics(logits: Tensor, labels: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``logits`` ``[N, C]`` against ``labels`` ``[N]``.

    Example:
        >>> classification_metrics(torch.tensor([[9.0, 0.0], [0.0, 9.0]]), torch.tensor([0, 0]))[1]
        0.5
    """
    loss = float(nn.functional.cross_entropy(logits, labels))
    return loss, float((logits.argmax(1) == labels).float().mean())


def classifier_metrics(model: nn.Module, data: ImageSet) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of a one-head classifier on ``data`` (no grad)."""
    (logits,) = forward_in_chunks(model, normalize(data.images))
    return classification_metrics(logits, data.labels)
