"""EMA of weights: decay warm-up, buffers followed, integer buffers copied."""

import torch

from hybridmednet.engine.ema import build_ema


def test_ema_warms_up_its_decay_and_tracks_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False), torch.nn.BatchNorm1d(1))
    torch.nn.init.zeros_(model[0].weight)
    ema = build_ema(model, decay=0.99)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema.update_parameters(model)  # the first update copies the weights (AveragedModel)
    assert torch.equal(ema.module[0].weight, model[0].weight)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    ema.update_parameters(model)  # n = 1: d = min(0.99, 2/11), far from 0.99 early in training
    assert torch.allclose(ema.module[0].weight, torch.full((1, 2), 1.0 + (9 / 11) * 2.0))
    model.train()
    model(torch.randn(8, 2))  # BatchNorm statistics move; the EMA follows them (use_buffers)
    ema.update_parameters(model)
    assert ema.module[1].num_batches_tracked == model[1].num_batches_tracked == 1
    assert ema.module[1].running_mean.abs().sum() > 0
