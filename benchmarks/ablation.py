"""Model-family and HybridMedNet-part ablation on DermaMNIST (re-rendered), 28 px.

Every variant trains with the same recipe and seed, chooses its checkpoint on val, and is
evaluated on test once (95% bootstrap CIs). Parameters and GFLOPs are measured at 28 px with
``torch.utils.flop_counter``; training img/s is the median over epochs. Results are written
after each variant, so a partial run still leaves a valid file.

    python benchmarks/ablation.py --epochs 10                 # all variants
    python benchmarks/ablation.py --only hmn_full,hmn_no_fusion
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, provenance, row_provenance, train_and_evaluate, write_results

from hybridmednet.config.loader import load_config

PRESET = Path(__file__).resolve().parents[1] / "configs" / "dermamnist.yaml"
TAXONOMY = "data.taxonomy={malignant: [mel, bcc, akiec], benign: [nv, bkl, df, vasc]}"
HMN = "model.name=hybridmednet_small28"

# name -> (part being measured, overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "hmn_full": ("HybridMedNet: all parts", [HMN, TAXONOMY]),
    "hmn_no_hierarchy": ("HybridMedNet: - hierarchical head", [HMN]),
    "hmn_sum_fusion": ("HybridMedNet: fixed instead of adaptive fusion", [HMN, TAXONOMY, "model.kwargs.fusion=sum"]),
    "hmn_global_only": ("HybridMedNet: global branch only", [HMN, TAXONOMY, "model.kwargs.fusion=global"]),
    "hmn_local_only": ("HybridMedNet: local branch only", [HMN, TAXONOMY, "model.kwargs.fusion=local"]),
    "hmn_no_cross_attention": ("HybridMedNet: - cross-branch attention", [HMN, TAXONOMY, "model.kwargs.cross_attention=false"]),
    "hmn_mhf": ("HybridMedNet: + MHF block v2", [HMN, TAXONOMY, "model.kwargs.mhf=true"]),
    **{f"hmn_head_{h}": (f"HybridMedNet head: {h}", [HMN, TAXONOMY, f"model.kwargs.head={h}"])
       for h in ("mlp", "residual_mlp", "attention_pool", "kan", "moe", "prototype")},
    "small_cnn": ("family: default CNN", ["model.name=small_cnn"]),
    "resnet18_fpn": ("family: ResNet-18 + FPN", ["model.name=resnet18_fpn"]),
    "vision_mamba_tiny": ("family: Vision Mamba (tiny)", ["model.name=vision_mamba_tiny", "model.kwargs.img_size=28"]),
    # ConvNeXt's 2x2 stride-2 downsampling cannot run on the 1x1 map left at stride 32 from 28 px:
    # stop at stage 3 (stride 16), which also drops the widest stage's parameters.
    "convnext_tiny_fpn": ("family: ConvNeXt-T (stages 1-3) + FPN",
                          ["model.name=convnext_tiny_fpn", "model.kwargs.out_indices=[0,1,2]"]),
    "efficientnetv2_s_fpn": ("family: EfficientNetV2-S + FPN", ["model.name=efficientnetv2_s_fpn"]),
}


# variants measured before rows carried their own provenance: never stamped with a later run's
UNRECORDED = {"commit": None, "note": "measured by an earlier run of this script; see the git history of "
              "benchmarks/results/ablation_dermamnist28.json for the commit that wrote it"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    path = RESULTS / "ablation_dermamnist28.json"
    previous = json.loads(path.read_text())["variants"] if path.exists() else {}
    origin = provenance([])
    cfg = load_config(PRESET)
    data_sha = provenance([Path(cfg.data.source.root) / "dermamnist.npz"])["data_sha256"]
    variants = dict(previous)
    for name in names:
        part, overrides = VARIANTS[name]
        with tempfile.TemporaryDirectory() as out:
            try:
                row = train_and_evaluate(PRESET, name, [f"train.epochs={args.epochs}",
                                                        "train.early_stopping_patience=null", *overrides], out)
            except Exception as exc:  # record the failure honestly and go on with the rest
                row = {"overrides": overrides, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        row["part"] = part
        # each variant keeps the provenance of the run that measured it: merging earlier variants into
        # the file never restamps them with this run's commit, command or dirty flag
        row["provenance"] = row_provenance(origin | {"data_sha256": data_sha})
        variants[name] = row
        payload = {"benchmark": "ablation", "dataset": "dermamnist (re-rendered)", "image_size": 28, "seed": 0,
                   "recipe": f"configs/dermamnist.yaml, {args.epochs} epochs, no early stopping, checkpoint chosen on val",
                   "variants": variants, "last_run": {**origin, "data_sha256": data_sha},
                   "provenance_note": "each variant's own provenance is in variants.<name>.provenance"}
        rows = [{"benchmark": "ablation", "dataset": "dermamnist (re-rendered)", "image_size": 28,
                 "model": n, "variant": v["part"], "seeds": [0], "metrics": v["metrics"], "ci": v["ci"], "wall_s": v["wall_s"],
                 "provenance": v.get("provenance") or UNRECORDED}
                for n, v in variants.items() if "metrics" in v]
        write_results("ablation_dermamnist28", payload, rows)
        status = row.get("error") or f"test acc {row['metrics']['test_acc']:.4f} auc {row['metrics']['test_auc']:.4f}"
        print(f"{name}: {status}", flush=True)


if __name__ == "__main__":
    main()
