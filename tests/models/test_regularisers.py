"""small_cnn's stochastic depth and channel dropout: active in training, identity in eval."""

import torch

from hybridmednet.models import create_model


def test_drop_path_and_spatial_dropout_act_in_training_only():
    torch.manual_seed(0)
    plain = create_model("small_cnn", num_classes=3, widths=(8, 8, 8, 8), drop_rate=0.0)
    model = create_model("small_cnn", num_classes=3, widths=(8, 8, 8, 8), drop_rate=0.0, drop_path_rate=0.5,
                         spatial_dropout=0.3)
    assert plain.state_dict().keys() == model.state_dict().keys()  # no new parameters: old checkpoints load
    model.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 16, 16)
    model.eval(), plain.eval()
    torch.testing.assert_close(model(x), plain(x))
    model.train()
    assert not torch.allclose(model(x), model(x))  # stochastic while training
    rates = [float(b.drop_path.drop_prob) if hasattr(b.drop_path, "drop_prob") else 0.0 for b in model.stages]
    assert rates[0] == 0.0 and rates[-1] == 0.5 and rates == sorted(rates)
