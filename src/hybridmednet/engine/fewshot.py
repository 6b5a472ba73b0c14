"""Episodic few-shot evaluation of a trained run's frozen embeddings on classes it never saw.

``hybridmednet fewshot RUN --data CONFIG --ways 3 --shots 1,5,10 --queries 15 --episodes 600``.
Episodes are drawn with a seed (the same seed gives the same episodes) from the data's classes
that the run was **not** trained on (or ``--classes``; naming a trained class is an error), from
all its splits pooled: a novel class has few images, and none of them was used to train the run.
When the data carries patient / lesion ids, a class's support and query images come from
disjoint groups, so a query is never another photo of a support lesion.

Methods on L2-normalised embeddings (the model's pooled ``ModelOutput.features``, else the global
average of its last spatial feature map): ``proto`` (nearest class mean by cosine, ProtoNet-style),
``logreg`` (a logistic-regression probe), ``finetune`` (a linear head initialised from the
prototypes and trained 100 Adam steps on the support set). Each reports the mean accuracy with
its 95% interval over episodes (1.96 sd / sqrt(episodes)) and the mean macro-F1. The result is a
derived file (``RUN/fewshot_<name>.json``) that records the checkpoint sha256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hybridmednet.errors import ConfigError, DataError

METHODS = ("proto", "logreg", "finetune")


def embed(run, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Frozen embeddings ``(N, D)`` of uint8 images at the run's size."""
    from hybridmednet.engine.inference import batches
    from hybridmednet.engine.taps import FeatureTaps, last_spatial_layer, pooled, probe
    from hybridmednet.output import as_output

    if run.clinical_spec is not None:
        raise DataError(f"{run.path}: a multimodal run; few-shot evaluation reads images only")
    p = run.preprocessing
    parts, taps = [], None
    for _, x, _ in batches(images, p["mean"], p["std"], run.runtime, batch_size):
        if taps is None:
            has_features = probe(run.model, x[:1], None).features is not None
            taps = FeatureTaps(run.model, set() if has_features else {last_spatial_layer(run.model, x[:1])}, "fewshot")
        with torch.no_grad(), taps.capture() as captured:
            out = as_output(run.model(x))
        parts.append((out.features.float() if out.features is not None else pooled(next(iter(captured.values()))))
                     .cpu().numpy())
    if taps is not None:
        taps.remove()
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def sample_episodes(targets: np.ndarray, groups: list | None, classes: list[int], *, ways: int, shots: int,
                    queries: int, episodes: int, seed: int) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """``[(episode classes, support indices, query indices)]``; support and query groups disjoint."""
    if ways > len(classes):
        raise ConfigError(f"--ways {ways}: only {len(classes)} novel class(es) available")
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(targets == c) for c in classes}
    out = []
    for _ in range(episodes):
        chosen = sorted(rng.choice(classes, size=ways, replace=False).tolist())
        support, query = [], []
        for c in chosen:
            members = rng.permutation(by_class[c])
            if groups is None:
                if len(members) < shots + 1:
                    raise DataError(f"class {c}: {len(members)} image(s), fewer than {shots} shots + 1 query")
                support += members[:shots].tolist()
                query += members[shots:shots + queries].tolist()
                continue
            taken, used = [], set()
            for i in members:  # whole groups into the support until it holds `shots` images
                if len(taken) >= shots:
                    break
                g = groups[i]
                if g in used:
                    continue
                used.add(g)
                same = [j for j in members if groups[j] == g][: shots - len(taken)]
                taken += same
            rest = [i for i in members if groups[i] not in used]
            if len(taken) < shots or not rest:
                raise DataError(f"class {c}: not enough patient/lesion groups for {shots} shots and disjoint queries")
            support += taken
            query += rest[:queries]
        out.append((chosen, np.asarray(support), np.asarray(query)))
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def classify(method: str, support: np.ndarray, support_y: np.ndarray, query: np.ndarray, seed: int) -> np.ndarray:
    """Predicted labels of the query embeddings (labels are 0..ways-1)."""
    support, query = _normalise(support), _normalise(query)
    ways = int(support_y.max()) + 1
    prototypes = _normalise(np.stack([support[support_y == k].mean(0) for k in range(ways)]))
    if method == "proto":
        return (query @ prototypes.T).argmax(1)
    if method == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=10.0, max_iter=1000).fit(support, support_y).predict(query)
    if method == "finetune":
        generator = torch.Generator().manual_seed(seed)
        head = torch.nn.Linear(support.shape[1], ways)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(prototypes).float() * 10)
            head.bias.zero_()
            head.weight.add_(torch.randn(head.weight.shape, generator=generator) * 1e-3)
        optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
        x, y = torch.from_numpy(support).float(), torch.from_numpy(support_y).long()
        for _ in range(100):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(head(x), y).backward()
            optimizer.step()
        with torch.no_grad():
            return head(torch.from_numpy(query).float()).argmax(1).numpy()
    raise ConfigError(f"few-shot method {method!r}: choose from {', '.join(METHODS)}")


def novel_classes(data_classes: list[str], trained: list[str], requested: list[str] | None) -> list[int]:
    seen = {c.lower() for c in trained}
    if requested:
        lookup = {c.lower(): i for i, c in enumerate(data_classes)}
        unknown = [c for c in requested if c.lower() not in lookup]
        if unknown:
            raise ConfigError(f"--classes {unknown} are not classes of the data; it has: {', '.join(data_classes)}")
        trained_too = [c for c in requested if c.lower() in seen]
        if trained_too:
            raise ConfigError(f"--classes {trained_too}: the run was trained on them; few-shot evaluation needs "
                              "classes it has not seen")
        return sorted(lookup[c.lower()] for c in requested)
    novel = [i for i, c in enumerate(data_classes) if c.lower() not in seen]
    if not novel:
        raise ConfigError(f"every class of the data ({', '.join(data_classes)}) was in the run's training; "
                          "give data with other classes, or --classes")
    return novel


def fewshot_evaluate(run_path: str | Path, data_cfg, *, ways: int, shots: list[int], queries: int = 15,
                     episodes: int = 600, classes: list[str] | None = None, methods=METHODS, seed: int = 0,
                     device: str | None = None, name: str | None = None) -> dict:
    from sklearn.metrics import f1_score

    from hybridmednet.data.pipeline import prepare_data
    from hybridmednet.engine.run import Run
    from hybridmednet.utils.io import atomic_write_json

    run = Run.load(run_path, device=device)
    p = run.preprocessing
    data_cfg = data_cfg.model_copy(update={"image_size": p["image_size"], "channels": p["channels"],
                                           "resize": p["resize"], "clinical": None})
    data = prepare_data(data_cfg)
    parts = [data.splits[s] for s in ("train", "val", "test") if s in data.splits and len(data.splits[s])]
    targets = np.concatenate([s.targets for s in parts])
    grouped = all(s.groups is not None and all(g is not None for g in s.groups) for s in parts)
    groups = [g for s in parts for g in s.groups] if grouped else None
    chosen = novel_classes(data.class_names, run.class_names, classes)
    keep = np.flatnonzero(np.isin(targets, chosen))
    images = np.concatenate([s.images for s in parts])[keep]
    embedded = embed(run, images)
    embeddings = np.zeros((len(targets), embedded.shape[1]), np.float32)
    embeddings[keep] = embedded
    results = {}
    for k in shots:
        plan = sample_episodes(targets, groups, chosen, ways=ways, shots=k, queries=queries, episodes=episodes,
                               seed=seed + 1000 * k)
        for method in methods:
            accs, f1s = [], []
            for e, (episode_classes, s_idx, q_idx) in enumerate(plan):
                relabel = {c: i for i, c in enumerate(episode_classes)}
                s_y = np.asarray([relabel[c] for c in targets[s_idx]])
                q_y = np.asarray([relabel[c] for c in targets[q_idx]])
                pred = classify(method, embeddings[s_idx], s_y, embeddings[q_idx], seed + e)
                accs.append(float((pred == q_y).mean()))
                f1s.append(float(f1_score(q_y, pred, average="macro", labels=list(range(ways)), zero_division=0)))
            half = 1.96 * float(np.std(accs, ddof=1)) / np.sqrt(len(accs)) if len(accs) > 1 else float("nan")
            results[f"{method}_{k}shot"] = {"method": method, "shots": k, "acc": float(np.mean(accs)),
                                            "acc_ci95": [float(np.mean(accs)) - half, float(np.mean(accs)) + half],
                                            "macro_f1": float(np.mean(f1s)), "episodes": len(accs)}
    record = {"run": str(run.path), **run.provenance(), "data": data.source, "classes": [data.class_names[c] for c in chosen],
              "trained_classes": run.class_names, "ways": ways, "shots": list(shots), "queries": queries,
              "episodes": episodes, "seed": seed, "grouped_by": "patient/lesion id" if groups else None,
              "embedding": "ModelOutput.features or the pooled last spatial feature map, L2-normalised",
              "interval": "mean accuracy +- 1.96 sd / sqrt(episodes)", "results": results}
    out = run.path / f"fewshot_{name or Path(data.source).stem}.json"
    atomic_write_json(out, record)
    return record | {"out": str(out)}
