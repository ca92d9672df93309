"""PyTorch definition of the bundled demo model (a small Fashion-MNIST CNN).

Importing this module imports torch; nothing else in edgeprof imports it at
import time. The factory is addressed as ``edgeprof.demo.model:fashion_cnn``.

Input: float32 NCHW ``(N, 1, 28, 28)`` in [0, 1] (uint8 / 255, no mean/std).
Output: logits ``(N, 10)``.

Only plain Conv2d / BatchNorm2d / ReLU / MaxPool2d / flatten / Linear layers are
used so that structured pruners (torch-pruning) can trace it.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10
INPUT_SHAPE = (1, 1, 28, 28)


class FashionCNN(nn.Module):
    """conv16-bn-relu-pool, conv32-bn-relu-pool, conv64-bn-relu-pool, flatten, linear(576->10)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),   # 28x28
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                              # 14x14
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                              # 7x7
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                              # 3x3
        )
        self.classifier = nn.Linear(64 * 3 * 3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def fashion_cnn() -> nn.Module:
    """Return a freshly initialised (untrained) demo model.

    Load trained weights with::

        m = fashion_cnn()
        m.load_state_dict(torch.load(demo_paths()["pt"], weights_only=True))
        m.eval()
    """
    return FashionCNN()
