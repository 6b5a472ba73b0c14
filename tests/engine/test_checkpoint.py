import json

import pytest
import torch

from hybridmednet.engine import checkpoint as ckpt
from hybridmednet.errors import CheckpointError


def test_save_load_round_trip_and_old_weights_removed(tmp_path):
    ckpt.save_checkpoint(tmp_path, "best", {"w": torch.ones(3)}, {"note": "a"}, epoch=1)
    ckpt.save_checkpoint(tmp_path, "best", {"w": torch.full((3,), 2.0)}, {"note": "b"}, epoch=2)
    tensors, meta = ckpt.load_checkpoint(tmp_path, "best")
    assert tensors["w"].tolist() == [2.0, 2.0, 2.0] and meta["note"] == "b" and meta["epoch"] == 2
    assert sorted(p.name for p in tmp_path.glob("best-*.safetensors")) == ["best-0002.safetensors"]


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, "last", {"w": torch.ones(2)}, {}, epoch=1)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing weights

    monkeypatch.setattr(ckpt, "save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, "last", {"w": torch.zeros(2)}, {}, epoch=2)
    tensors, meta = ckpt.load_checkpoint(tmp_path, "last")
    assert meta["epoch"] == 1 and tensors["w"].tolist() == [1.0, 1.0]
    assert not list(tmp_path.glob("*.tmp"))


def test_crash_between_weights_and_json_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, "last", {"w": torch.ones(2)}, {}, epoch=1)
    monkeypatch.setattr(ckpt, "atomic_write_json", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, "last", {"w": torch.zeros(2)}, {}, epoch=2)
    assert ckpt.load_checkpoint(tmp_path, "last")[1]["epoch"] == 1


def test_damaged_weights_are_detected(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, "best", {"w": torch.ones(4)}, {}, epoch=1)
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        ckpt.load_checkpoint(tmp_path, "best")
    (tmp_path / "best.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.load_checkpoint(tmp_path, "best")
    with pytest.raises(CheckpointError, match="no 'last' checkpoint"):
        ckpt.load_checkpoint(tmp_path, "last")


def test_pickle_needs_explicit_opt_in(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="pickle file, which can run code"):
        ckpt.load_weights_file(path)
    assert ckpt.load_weights_file(path, allow_pickle=True)["w"].tolist() == [1.0, 1.0]


def test_optimizer_state_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = ckpt.flatten_optimizer(opt.state_dict())
    json.dumps(meta)
    restored = ckpt.unflatten_optimizer(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(restored)
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])


def test_restored_adam_moments_keep_a_channels_last_parameter_layout():
    """safetensors returns contiguous tensors; the fused AdamW step needs the parameter's strides."""
    from hybridmednet.engine.checkpoint import flatten_optimizer, match_parameter_layout, unflatten_optimizer

    def make():
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last))
        return p, torch.optim.AdamW([p], lr=0.01, fused=True)

    p, opt = make()
    p.grad = torch.randn_like(p)
    opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict())
    q, restored = make()
    with torch.no_grad():
        q.copy_(p)
    as_read_from_file = {k: v.clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}
    restored.load_state_dict(unflatten_optimizer(as_read_from_file, meta))
    match_parameter_layout(restored)
    assert restored.state[q]["exp_avg"].stride() == q.stride()
    grad = torch.randn_like(p)
    p.grad, q.grad = grad.clone(), grad.clone()
    opt.step()
    restored.step()
    assert torch.equal(p, q)
