"""Evaluation batches: capped by pixels so that large images do not put evaluation at the top of memory."""

from __future__ import annotations

import torch
from torch import nn

from medclass.inference import EVAL_PIXELS, eval_batch, predict_logits


def test_eval_batch_keeps_small_images_and_caps_large_ones():
    assert eval_batch(512, (28, 28)) == 512
    assert eval_batch(512, (224, 224)) == EVAL_PIXELS[2] // (224 * 224) == 20
    assert eval_batch(512, (64, 64)) == 256
    assert eval_batch(512, (64, 64, 64)) == EVAL_PIXELS[3] // 64**3 == 16
    assert eval_batch(8, (4096, 4096)) == 1  # never zero


class _Seen(nn.Module):
    """Records the batch sizes it is called with; logits: the mean pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x.flatten(1).mean(1, keepdim=True) * self.w


def test_predict_logits_runs_large_images_in_smaller_batches_with_the_same_result():
    images = torch.randint(0, 256, (400, 1, 224, 224), dtype=torch.uint8)
    prep = {"channels": 1, "scale": 1 / 255, "mean": [0.5], "std": [0.5]}
    model = _Seen()
    got = predict_logits(model, images, prep, batch_size=512)
    assert max(model.batches) == 20 and sum(model.batches) == 400
    want = ((images.float() / 255 - 0.5) / 0.5).flatten(1).mean(1, keepdim=True)
    torch.testing.assert_close(got, want)


def test_test_time_views_averaged_one_at_a_time_equal_the_mean_of_all_views():
    from medclass.transforms.tta import tta_views

    images = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    prep = {"channels": 1, "scale": 1 / 255, "mean": [0.5], "std": [0.5], "tta": ["hflip", "shift"]}
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 3))
    x = (images.float() / 255 - 0.5) / 0.5
    want = torch.stack([model(v) for v in tta_views(x, ["hflip", "shift"])]).mean(0)
    assert len(tta_views(x, ["hflip", "shift"])) == 6
    torch.testing.assert_close(predict_logits(model, images, prep), want)
