"""The seeds' clinician-inspired strategies for image + metadata diagnosis on HAM10000, measured
with the multimodal benchmark's protocol (rows ``benchmark: "strategies"``).

Same recipe, backbone (small_cnn), seeds, val-chosen checkpoint and single test read as
``benchmarks/multimodal.py``, whose machinery this reuses; every multimodal row is scored a
second time with the clinical input removed. Rows: image-only; concat (the baseline every
strategy must beat beyond its interval); ``ssm`` (text and image tokens through bidirectional
selective-scan blocks); ``sequence`` (the image's stage vectors and the text read as a sequence by
a BiLSTM, and by a small transformer); the narrative text (the metadata rendered as one clinical
sentence instead of the phrase template, same MiniLM encoder, concat fusion); and the seed's
"ConNeXT" (ConvNeXt-Tiny + FPN with the mixture-of-experts head, image only: the multimodal
classifier replaces a backbone's own head). The three view strategies (``model.multimodal.views``,
``layers/views.py``) read the images at 128 px and cut 64-px views inside the model: the whole
image area-downsampled, and a lesion crop found without labels (Otsu's threshold on the grey image
under a centre prior) sampled from the 128-px input. ``global_local``: both views, each through its
own backbone, their tokens concatenated with the text by concat fusion; ``dual_expert``: a lesion
expert on the crop and the concat model on the whole image, mixed by a learned per-case gate;
``multi_view``: whole, lesion and mirrored views through one shared backbone, every token attending
to every other and to the text tokens (``joint_attention`` fusion), with ``joint_attention`` on the
single 64-px view as its control. They need the original images, so not the 28-px DermaMNIST
setting. Not built: MIBF-Net (named by the seed without a definition) and the Spine dataset (not
available here).

    python benchmarks/strategies.py --setting lesion64 --seeds 0,1,2
    python benchmarks/strategies.py --setting official64 --only concat,ssm
    python benchmarks/strategies.py --setting lesion64 --paired   # no training: every variant - concat

``--paired`` scores every variant of the results file against concat on the same test cases from
the kept predictions (``multimodal_paired.from_kept``: seeds averaged inside each resample,
lesion-clustered bootstrap and McNemar per seed) into ``strategies_paired_<setting>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multimodal import CONFIGS, IMAGE_ONLY, SETTINGS, run_setting
from multimodal_paired import from_kept

NARRATIVE = ['data.clinical.template=["A {age:.0f}-year-old {sex} patient", "presents with a lesion on the {localization}."]',
             'data.clinical.joiner=" "',
             "data.clinical.missing=" + json.dumps({"age": "A patient of unknown age", "sex": "of unknown sex",
                                                    "localization": "presents with a lesion at an unknown site."})]
# name -> overrides on the setting's preset (MiniLM text, concat fusion, modality dropout 0.1)
VARIANTS: dict[str, list[str]] = {
    "image_only": IMAGE_ONLY,
    "concat": ["model.multimodal.fusion=concat"],
    "ssm": ["model.multimodal.fusion=ssm"],
    "sequence_lstm": ["model.multimodal.fusion=sequence", "model.multimodal.sequence_reader=lstm"],
    "sequence_transformer": ["model.multimodal.fusion=sequence", "model.multimodal.sequence_reader=transformer"],
    "narrative_concat": ["model.multimodal.fusion=concat", *NARRATIVE],
    "convnext_moe": [*IMAGE_ONLY, "model.name=convnext_tiny_fpn", "model.kwargs={head: moe}"],
    "joint_attention": ["model.multimodal.fusion=joint_attention"],
    "global_local": ["data.image_size=128", "model.multimodal.views={strategy: global_local, size: 64}"],
    "dual_expert": ["data.image_size=128", "model.multimodal.views={strategy: dual_expert, size: 64}"],
    "multi_view": ["data.image_size=128", "model.multimodal.fusion=joint_attention",
                   "model.multimodal.views={strategy: multi_view, size: 64, views: [global, lesion, hflip]}"],
}
VIEWS = {"global_local", "dual_expert", "multi_view"}  # cut from 128-px originals: not the 28-px DermaMNIST file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", default="lesion64", choices=sorted(SETTINGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", default=None, help=f"comma-separated variants of {', '.join(VARIANTS)}")
    parser.add_argument("--results-name", default=None, help="default strategies_<setting>")
    parser.add_argument("--reindex", action="store_true", help="rows again from the results file's kept predictions; "
                        "no training")
    parser.add_argument("--paired", action="store_true", help="score every variant against concat from the kept "
                        "predictions of strategies_<setting>.json; no training")
    parser.add_argument("--set", action="append", default=[],
                        help="extra override for every run (a smoke test: --set data.max_samples_per_split=300 "
                             "--epochs 1 --results-name strategies_smoke)")
    args = parser.parse_args()
    if args.paired:
        paired(args.setting, args.results_name or f"strategies_{args.setting}")
        return
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--only: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.setting == "official28" and VIEWS & set(names):
        raise SystemExit(f"--setting official28: {', '.join(sorted(VIEWS & set(names)))} cut a 64-px lesion crop from "
                         "128-px images, which the 28-px DermaMNIST file does not have; use official64 or lesion64")
    run_setting("strategies", VARIANTS, args.setting, [int(s) for s in args.seeds.split(",")], args.epochs, names,
                args.results_name or f"strategies_{args.setting}", reindex=args.reindex, extra=args.set)


def paired(setting: str, results_name: str) -> None:
    """Every variant with runs in ``<results_name>.json`` minus concat."""
    from hybridmednet.config.loader import load_config

    preset_name, setting_overrides, _ = SETTINGS[setting]
    cfg = load_config(CONFIGS / preset_name, setting_overrides)
    from_kept(setting, None, cfg.model.name, cfg.data.groups, source="strategies", baseline="concat",
              results_name=results_name)


if __name__ == "__main__":
    main()
