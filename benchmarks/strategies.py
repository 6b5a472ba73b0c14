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
classifier replaces a backbone's own head). Not built, so not measured: the dual-expert gate,
the global-local dual stream and multi-view cross-attention (they need a lesion crop from the
original image in the data pipeline); MIBF-Net (named by the seed without a definition) and the
Spine dataset (not available here).

    python benchmarks/strategies.py --setting lesion64 --seeds 0,1,2
    python benchmarks/strategies.py --setting official64 --only concat,ssm
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multimodal import IMAGE_ONLY, SETTINGS, run_setting

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
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", default="lesion64", choices=sorted(SETTINGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", default=None, help=f"comma-separated variants of {', '.join(VARIANTS)}")
    parser.add_argument("--results-name", default=None, help="default strategies_<setting>")
    parser.add_argument("--set", action="append", default=[],
                        help="extra override for every run (a smoke test: --set data.max_samples_per_split=300 "
                             "--epochs 1 --results-name strategies_smoke)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--only: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    run_setting("strategies", VARIANTS, args.setting, [int(s) for s in args.seeds.split(",")], args.epochs, names,
                args.results_name or f"strategies_{args.setting}", extra=args.set)


if __name__ == "__main__":
    main()
