"""``hybridmednet`` command line: a thin layer over config -> builders -> engine.

Heavy modules (torch engine, timm, sklearn) are imported inside each command so ``--help``
stays fast. Errors caused by input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hybridmednet.errors import ConfigError, HybridMedNetError

from hybridmednet.paths import preset_dir, resolve_config_path


def _load(args) -> object:
    from hybridmednet.config.loader import load_config

    overrides = list(args.set or [])
    if getattr(args, "skip_bad", False):
        overrides.append("data.skip_bad=true")
    if getattr(args, "data", None):
        if args.config:
            raise ConfigError("give --config or --data, not both (--set overrides work with either)")
        from hybridmednet.data.infer import infer_config

        raw, lines = infer_config(args.data)
        print("\n".join(f"inferred {line}" for line in lines), file=sys.stderr)
        return load_config(raw=raw, overrides=overrides)
    if not getattr(args, "config", None):
        raise ConfigError("give --config CONFIG (a YAML file or a preset name) or --data PATH (a folder, CSV or npz)")
    return load_config(resolve_config_path(args.config), overrides)


def cmd_train(args) -> int:
    from hybridmednet.engine.runtime import shutdown_distributed
    from hybridmednet.engine.trainer import train

    cfg = _load(args)
    try:
        summary = train(cfg, resume=args.resume, overwrite=args.overwrite, device=args.device, quiet=args.quiet)
    finally:
        shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def distill_override(teachers: list[str], methods: list[str], *, learned_weights: bool, teacher_view: str | None) -> str:
    """``--teacher`` / ``--method kd:temperature=4,weight=1`` as one ``train.distill=...`` override,
    so ``distill`` is ``train`` with that section (validated by the same config checks)."""
    import yaml

    parsed = []
    for spec in methods:
        name, _, rest = spec.partition(":")
        entry = {"name": name.strip()}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--method {spec!r}: options are KEY=VALUE pairs after the name, e.g. "
                                  "fitnet:weight=0.5,student_layer=stages.2")
            entry[key.strip()] = yaml.safe_load(value)
        parsed.append(entry)
    section = {"teacher": teachers[0] if len(teachers) == 1 else teachers, "methods": parsed,
               "learned_weights": learned_weights}
    if teacher_view:
        section["teacher_view"] = teacher_view
    return "train.distill=" + json.dumps(section)


def cmd_distill(args) -> int:
    args.set = [*(args.set or []), distill_override(args.teacher, args.method, learned_weights=args.learned_weights,
                                                    teacher_view=args.teacher_view)]
    return cmd_train(args)


def cmd_serve(args) -> int:
    """FastAPI on uvicorn. Loopback by default: another address needs --api-key or --insecure."""
    if args.host not in ("127.0.0.1", "localhost", "::1") and not (args.api_key or args.insecure):
        raise ConfigError(f"--host {args.host} exposes the service beyond this machine: give --api-key KEY (bearer "
                          "token for /v1/*) or, on a trusted network, --insecure")
    import uvicorn

    from hybridmednet.serve.app import Settings, create_app
    from hybridmednet.serve.backends import load_backend

    settings = Settings(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_batch=args.max_batch,
                        max_latency_ms=args.max_latency_ms, max_queue=args.max_queue, timeout_s=args.timeout_s,
                        api_key=args.api_key, log_inputs=args.log_inputs, request_log=not args.no_request_log)
    if args.workers > 1:  # each worker process loads the models itself: the factory reads this environment
        os.environ["HYBRIDMEDNET_SERVE"] = json.dumps({"runs": args.run, "backend": args.backend, "device": args.device,
                                                       "threads": args.threads, "settings": settings.__dict__})
        uvicorn.run("hybridmednet.serve.worker:app_from_environment", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="warning")
        return 0
    backends = [load_backend(run, args.backend, device=args.device, threads=args.threads) for run in args.run]
    print(f"serving {', '.join(b.name for b in backends)} ({args.backend}) on http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.run(create_app(backends, settings), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_fewshot(args) -> int:
    from hybridmednet.engine.fewshot import METHODS, fewshot_evaluate

    methods = args.methods.split(",") if args.methods else list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"--methods {unknown}: choose from {', '.join(METHODS)}")
    cfg = _load(args)
    shots = [int(s) for s in args.shots.split(",")]
    result = fewshot_evaluate(args.run, cfg.data, ways=args.ways, shots=shots, queries=args.queries,
                              episodes=args.episodes, classes=args.classes.split(",") if args.classes else None,
                              methods=methods, seed=args.seed, device=args.device)
    for key, r in result["results"].items():
        print(f"{key}: acc {r['acc']:.4f} [{r['acc_ci95'][0]:.4f}, {r['acc_ci95'][1]:.4f}] macro-F1 {r['macro_f1']:.4f} "
              f"({r['episodes']} episodes)")
    print(f"{result['ways']}-way on {', '.join(result['classes'])}; wrote {result['out']}")
    return 0


def cmd_tune(args) -> int:
    from hybridmednet.tune.study import Study, run_workers

    out = args.out or str(Path("runs") / f"tune_{Path(args.config).stem}")
    study = Study(args.config, args.space, out, objectives=tuple(args.objectives.split(",")), storage=args.storage,
                  study_name=args.study, pruner=args.pruner, prune_warmup=args.prune_warmup,
                  prune_startup=args.prune_startup, seed=args.seed, base_overrides=args.set or [],
                  device=args.device)
    worker = os.environ.get("HYBRIDMEDNET_TUNE_WORKER") == "1"
    others = [] if worker or args.workers <= 1 else run_workers(sys.argv[1:], args.workers)
    try:
        study.optimize(args.trials, timeout=args.timeout)
    finally:
        failed = [p.wait() for p in others]
    if worker:
        return 0
    if any(failed):
        raise ConfigError(f"{sum(1 for f in failed if f)} tune worker(s) failed; the study in {study.storage} keeps "
                          "every finished trial: run the same command again to continue")
    record = study.finish()
    print(json.dumps({k: record[k] for k in ("trial", "params", "val", "n_trials")} | {"test": record["test"]["metrics"]},
                     indent=2, default=str))
    print(f"wrote {Path(out) / 'best.json'}; study {record['study']} in {record['storage']}")
    return 0


def cmd_sweep(args) -> int:
    from hybridmednet.tune.sweep import run_sweep

    out = args.out or str(Path("runs") / f"sweep_{Path(args.config).stem}")
    record = run_sweep(args.config, args.vary, [int(s) for s in args.seeds.split(",")], out, base_overrides=args.set or [],
                       n_bootstrap=args.n_bootstrap, device=args.device)
    for key, rows in record["factors"].items():
        for r in rows:
            print(f"{key}={r['value']}{' (base)' if r['is_base'] else ''}: val acc {r['val_acc']:.4f}±{r['val_acc_std']:.4f} "
                  f"auc {r['val_auc']:.4f}; test acc {r['test_acc']:.4f} [{r['test_acc_ci95'][0]:.4f}, "
                  f"{r['test_acc_ci95'][1]:.4f}] auc {r['test_auc']:.4f}")
    print(f"wrote {record['out']} and one plot per factor (choose on val, never on the test column)")
    return 0


def cmd_select(args) -> int:
    from hybridmednet.tune.select import select_model

    record = select_model(args.candidates, args.constraints, args.out, iters=args.iters, threads=args.threads,
                          device=args.device)
    for row in record["candidates"]:
        print(f"{row['candidate']}: val {row['val_monitor']} {row['val_score']:.4f}, p95 {row['latency_ms_p95']:.3f} ms, "
              f"{row['file_mb']:.2f} MB -> {row['verdict']}")
    print(f"selected: {record['selected'] or 'none (' + record['reason'] + ')'}; wrote {record['out']}")
    return 0


def cmd_evaluate(args) -> int:
    if args.data:
        if len(args.run) != 1 or args.tta or args.without_clinical:
            raise ConfigError("--data scores one run on another dataset; drop the extra runs, --tta and --without-clinical")
        from hybridmednet.engine.external import external_evaluate

        result = external_evaluate(args.run[0], args.data, class_map=args.class_map, split=args.data_split,
                                   n_bootstrap=args.n_bootstrap, out=args.out, device=args.device, skip_bad=args.skip_bad)
        summary = {k: result["metrics"][k] for k in result["ci95"]} | {"ci95": result["ci95"], "n": result["n"]}
        print(json.dumps(summary | {"classes_missing_from_data": result["classes_missing_from_data"],
                                    "calibration_shift": result["calibration_shift"]}, indent=2))
        print(f"wrote {result['out']}")
        return 0
    if args.class_map or args.data_split:
        raise ConfigError("--class-map and --data-split go with --data")
    flips = tuple(args.tta.split(",")) if args.tta else ("none",)
    if len(args.run) == 1 and flips == ("none",):
        from hybridmednet.engine.evaluate import evaluate_run

        result = evaluate_run(args.run[0], args.split, n_bootstrap=args.n_bootstrap, device=args.device,
                              without_clinical=args.without_clinical)
        written = Path(args.run[0]) / "metrics.json"
    else:
        from hybridmednet.engine.ensemble import evaluate_ensemble

        if args.without_clinical:
            raise ConfigError("--without-clinical evaluates one run without TTA; drop the extra runs / --tta")

        written = Path(args.out or Path(args.run[0]) / f"ensemble_{args.split}.json")
        kwargs = {} if args.n_bootstrap is None else {"n_bootstrap": args.n_bootstrap}
        result = evaluate_ensemble(args.run, args.split, flips=flips, out=written, device=args.device, **kwargs)
    print(json.dumps({k: result["metrics"][k] for k in result["ci95"]} | {"ci95": result["ci95"], "n": result["n"]}, indent=2))
    print(f"wrote {written}")
    return 0


def cmd_compare(args) -> int:
    from hybridmednet.engine.compare import compare_runs

    result = compare_runs(args.a, args.b, args.split, n_bootstrap=args.n_bootstrap, out=args.out)
    for name, m in result["metrics"].items():
        print(f"{name:>12}: A {m['a']:.4f}  B {m['b']:.4f}  B-A {m['diff']:+.4f} [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]")
    for k, t in enumerate(result.get("mcnemar_acc", [])):
        print(f"McNemar (acc), run pair {k + 1}: only A right {t['only_a_correct']}, only B right {t['only_b_correct']}, "
              f"p = {t['p_value']:.3g}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_predict(args) -> int:
    default_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = args.out or str(default_dir / "predictions.csv")
    if args.backend == "onnx":  # torch-free: numpy, pillow, OpenCV, onnxruntime
        from hybridmednet.deploy.onnx_runtime import OnnxClassifier

        result = OnnxClassifier(args.run).predict_files(args.inputs, out, skip_bad=args.skip_bad,
                                                        path_column=args.path_column, abstain=args.abstain)
    else:
        from hybridmednet.engine.predict import predict_files

        result = predict_files(args.run, args.inputs, out, skip_bad=args.skip_bad, path_column=args.path_column,
                               device=args.device, abstain=args.abstain)
    print(json.dumps(result))
    return 0


def cmd_export(args) -> int:
    from hybridmednet.deploy.export import export_run

    report = export_run(args.run, args.format, args.out, tolerance=args.tolerance, opset=args.opset)
    print(json.dumps({k: v for k, v in report.items() if k != "metadata"}, indent=2))
    return 0


def cmd_quantize(args) -> int:
    from hybridmednet.deploy.quantize import quantize_run

    print(json.dumps(quantize_run(args.run, args.mode, n_calibration=args.calibration_images, out=args.out), indent=2))
    return 0


def cmd_benchmark(args) -> int:
    from hybridmednet.deploy.benchmark import benchmark_run

    result = benchmark_run(args.run, iters=args.iters, threads=args.threads, onnx_files=args.onnx or None)
    print(f"{result['model']} at {result['image_size']} px: {result['params_m']:.2f}M parameters, "
          f"{result['gflops']:.3f} GFLOPs, {result['threads']} thread(s)")
    print(f"{'backend':<34}{'MB':>8}{'p50 ms':>9}{'p95 ms':>9}{'b64 img/s':>11}{'peak MB':>9}")
    for r in result["rows"]:
        print(f"{r['backend']:<34}{r['size_mb']:>8.2f}{r['latency_ms_p50']:>9.3f}{r['latency_ms_p95']:>9.3f}"
              f"{r['throughput_b64_img_s']:>11.0f}{r['peak_rss_mb']:>9.0f}")
    print(f"wrote {Path(args.run) / 'benchmark.json'}")
    return 0


def cmd_report(args) -> int:
    from hybridmednet.report import build_report

    path = build_report(args.run, args.out, n_bootstrap=args.n_bootstrap, with_cam=not args.no_cam, device=args.device)
    print(f"wrote {path}")
    return 0


def cmd_explain(args) -> int:
    from hybridmednet.explain import explain_files

    out = args.out or str(Path(args.run) / "explain")
    target = int(args.target) if args.target and args.target.isdigit() else args.target
    results = explain_files(args.run, args.inputs, out, method=args.method, target=target, device=args.device)
    print(json.dumps(results, indent=1))
    return 0


def cmd_audit(args) -> int:
    from hybridmednet.data.leakage import summarize
    from hybridmednet.data.pipeline import prepare_data

    cfg = _load(args)
    data = prepare_data(cfg.data)
    print(summarize(data.audit))
    print(json.dumps(data.audit, indent=2))
    return 0


def cmd_models(args) -> int:
    from hybridmednet.models import list_models

    if args.timm:
        from hybridmednet.models.timm_models import _timm

        print("\n".join(_timm().list_models(args.timm)))
    elif args.details:
        from hybridmednet.models.profile import model_details

        print(f"{'model':<28}{'params (M)':>12}{'GFLOPs':>10}  at {args.size} px, {args.in_chans} channel(s)")
        for name in list_models():
            d = model_details(name, args.size, args.in_chans)
            print(f"{name:<28}{d['params_m']:>12.2f}{d['gflops']:>10.3f}")
    else:
        print("\n".join(list_models()))
    return 0


def cmd_demo(args) -> int:
    """Train the DermaMNIST preset, evaluate it once on test, print the headline numbers."""
    from hybridmednet.config.loader import load_config
    from hybridmednet.engine.evaluate import evaluate_run
    from hybridmednet.engine.trainer import train

    started = time.perf_counter()
    overrides = [f"output_dir={args.output_dir}"] + list(args.set or [])
    cfg = load_config(preset_dir() / "demo_dermamnist.yaml", overrides)
    summary = train(cfg, overwrite=True, quiet=args.quiet)
    result = evaluate_run(cfg.run_dir, "test")
    train_eval_s = time.perf_counter() - started
    from hybridmednet.report import build_report

    report = build_report(cfg.run_dir)
    wall = time.perf_counter() - started
    m, ci = result["metrics"], result["ci95"]
    print(f"\nDermaMNIST (re-rendered), 28 px, {cfg.model.name}: test ACC {m['acc']:.4f} "
          f"[{ci['acc'][0]:.4f}, {ci['acc'][1]:.4f}], AUC {m['auc']:.4f} [{ci['auc'][0]:.4f}, {ci['auc'][1]:.4f}]; "
          f"{summary['train_img_s_median']:.0f} train img/s; train + evaluate {train_eval_s:.0f} s, with report {wall:.0f} s")
    print(f"run directory: {cfg.run_dir} (config.yaml, metrics.csv, metrics.json, checkpoints/); report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridmednet", description="Medical image classification: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p, *, data: bool = False):
        if data:
            source = p.add_mutually_exclusive_group(required=True)
            source.add_argument("--config", help="YAML file or preset name (hybridmednet/presets/<name>.yaml)")
            source.add_argument("--data", metavar="PATH", help="an image folder, CSV or npz: source, classes, channels and "
                                                                 "size are inferred and printed; the default recipe is used")
        else:
            p.add_argument("--config", required=True, help="YAML file or preset name (hybridmednet/presets/<name>.yaml)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.epochs=30")
        p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and list them in the run")

    def training_flags(p):
        p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
        p.add_argument("--device", default=None)
        p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("train", help="train a model from a config, or straight from a data folder / CSV / npz")
    with_config(p, data=True)
    training_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train the config's model as a student of a trained teacher run (or seed ensemble)")
    with_config(p, data=True)
    p.add_argument("--teacher", action="append", required=True, metavar="RUN",
                   help="trained run directory; repeat for a seed ensemble (mean of softened probabilities)")
    p.add_argument("--method", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
                   help="a distiller and its options, e.g. kd:temperature=4 or fitnet:weight=0.5,student_layer=stages.2; "
                        "repeat to combine (kd, dkd, fitnet, at, rkd, crd, reviewkd)")
    p.add_argument("--learned-weights", action="store_true", help="uncertainty-weight the task and distill terms")
    p.add_argument("--teacher-view", choices=["augmented", "clean", "own_images"], default=None,
                   help="augmented (default): the teacher reads the student's augmented batch; clean: its outputs on "
                        "the un-augmented training images, computed once; own_images: the same, on the teacher's own "
                        "data's images of those cases (ids mapped by train.distill.teacher_ids, set in the config)")
    training_flags(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("fewshot", help="episodic few-shot accuracy of a run's frozen embeddings on classes it never saw")
    p.add_argument("run")
    with_config(p, data=True)
    p.add_argument("--ways", type=int, default=3)
    p.add_argument("--shots", default="1,5,10")
    p.add_argument("--queries", type=int, default=15, help="query images per class and episode")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--classes", default=None, help="comma-separated novel classes (default: every untrained class)")
    p.add_argument("--methods", default=None, help="proto,logreg,finetune (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_fewshot)

    p = sub.add_parser("tune", help="Optuna search over config keys on val; the best trial tested once")
    p.add_argument("--config", required=True, help="base YAML file or preset name")
    p.add_argument("--space", required=True, help="YAML: dotted config key -> {type, low, high, log, choices, when}")
    p.add_argument("--trials", type=int, required=True, help="the study's total of finished + pruned trials")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///<out>/study.db)")
    p.add_argument("--study", default=None, help="study name (default: the output folder's name)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the study on this machine")
    p.add_argument("--objectives", default="val", help="val, or val,params / val,latency (a Pareto front)")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    p.add_argument("--prune-warmup", type=int, default=5, help="epochs every trial trains before it can be pruned")
    p.add_argument("--prune-startup", type=int, default=5, help="trials run unpruned before the median pruner acts")
    p.add_argument("--out", default=None, help="study folder (default runs/tune_<config>)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed overrides of the base config")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("sweep", help="one factor at a time around a config, several seeds, seed-level intervals")
    p.add_argument("--config", required=True)
    p.add_argument("--vary", action="append", required=True, metavar="KEY=V1,V2,...")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=None, help="sweep folder (default runs/sweep_<config>)")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed overrides of the base config")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("select", help="the best-val model that meets latency / size / memory limits")
    p.add_argument("--candidates", nargs="+", required=True, help="configs (trained if needed) or run directories")
    p.add_argument("--constraints", required=True, help='e.g. "latency_ms_p95<=10,file_mb<=100,peak_mb<=2000"')
    p.add_argument("--out", default="runs/select")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("serve", help="web service + page: predict / explain over HTTP, Prometheus /metrics")
    p.add_argument("run", nargs="+", help="run directories (or .onnx files with --backend onnx); the first is the default")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: the run's export/model.onnx through onnxruntime, torch never imported")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="bearer token required on /v1/* (health and metrics stay open)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-latency-ms", type=float, default=0.0,
                   help="extra time a batch waits for more requests (0: run what is queued as soon as the model is free)")
    p.add_argument("--max-queue", type=int, default=256, help="cases waiting before new ones get 503 + Retry-After")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-request limit (503 after it)")
    p.add_argument("--max-upload-mb", type=float, default=20.0)
    p.add_argument("--max-pixels", type=int, default=50_000_000, help="decoded size limit (decompression bombs: 413)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (set PROMETHEUS_MULTIPROC_DIR)")
    p.add_argument("--log-inputs", default=None, metavar="DIR",
                   help="keep every answered upload (named by sha256) and its answer in DIR; off by default")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per worker (onnxruntime or torch)")
    p.add_argument("--no-request-log", action="store_true", help="no JSON line per request on stderr")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("evaluate", help="evaluate a run's validation-selected checkpoint (several runs: their ensemble)")
    p.add_argument("run", nargs="+", help="run directories; with more than one, their probabilities are averaged")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--tta", default=None, metavar="FLIPS",
                   help="average over flips, e.g. none,h,v,hv (decide on --split val before reading test)")
    p.add_argument("--out", default=None, help="ensemble/TTA or --data metrics JSON (default RUN/ensemble_<split>.json)")
    p.add_argument("--without-clinical", action="store_true",
                   help="multimodal runs: evaluate as if every case lacked its clinical text/metadata")
    p.add_argument("--data", default=None, metavar="CONFIG_OR_SOURCE",
                   help="external validation: a data config (YAML/preset), an image folder, a CSV (one-hot ISIC columns "
                        "too) or an npz, read with the run's preprocessing; writes RUN/external_<name>.json")
    p.add_argument("--class-map", action="append", metavar="DATA=MODEL",
                   help="with --data: map a data class to a model class (names also match case-insensitively)")
    p.add_argument("--data-split", default=None, help="with --data: the split to score (default: test if the data has one, else all)")
    p.add_argument("--skip-bad", action="store_true", help="with --data: skip unreadable images")
    p.add_argument("--n-bootstrap", type=int, default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="paired bootstrap of B - A on the same cases, from evaluated runs' predictions")
    p.add_argument("--a", nargs="+", required=True, metavar="RUN", help="baseline run(s); several = seeds, averaged")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN", help="challenger run(s)")
    p.add_argument("--split", default="test", help="predictions_<split>.csv to read, e.g. test, val, test_without_clinical")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--out", default=None, help="also write the comparison as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="predict images, a folder, or a CSV of paths")
    p.add_argument("run", help="run directory (or, with --backend onnx, an exported .onnx file)")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", default=None, help="output CSV (default RUN/predictions.csv)")
    p.add_argument("--path-column", default="path")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--abstain", action="store_true", help="flag cases above the val-chosen uncertainty threshold (needs `report`)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="onnx: run RUN/export/model.onnx (or the .onnx given) without importing torch")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export the val-selected checkpoint to ONNX or TorchScript, with a parity check")
    p.add_argument("run")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", default=None, help="output file (default RUN/export/model.onnx or model.ts)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs logit difference to PyTorch")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="int8 ONNX (dynamic, or static calibrated on training images)")
    p.add_argument("run")
    p.add_argument("--mode", default="static", choices=["static", "dynamic"])
    p.add_argument("--calibration-images", type=int, default=512, help="training images for static calibration")
    p.add_argument("--out", default=None, help="default RUN/export/model.int8-<mode>.onnx")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("benchmark", help="size, FLOPs, latency p50/p95, throughput and peak memory: eager vs ONNX")
    p.add_argument("run")
    p.add_argument("--iters", type=int, default=200, help="batch-1 calls timed per backend")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--onnx", action="append", help="ONNX file(s) to measure (default: every RUN/export/*.onnx)")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("report", help="one self-contained HTML report: metrics, calibration, subgroups, Grad-CAM, model card")
    p.add_argument("run")
    p.add_argument("--out", default=None, help="output HTML (default RUN/report.html)")
    p.add_argument("--n-bootstrap", type=int, default=None)
    p.add_argument("--no-cam", action="store_true", help="skip the Grad-CAM gallery")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("explain", help="CAM heat-map overlays (Grad-CAM etc.) for images, a folder, or a CSV")
    p.add_argument("run")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", default=None, help="output folder (default RUN/explain)")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "scorecam", "eigencam", "attention"])
    p.add_argument("--target", default=None, help="class name or index to explain (default: the predicted class)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("audit", help="leakage audit of a config's splits")
    with_config(p, data=True)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("models", help="list registered models (or timm models with --timm PATTERN)")
    p.add_argument("--timm", default=None, metavar="PATTERN")
    p.add_argument("--details", action="store_true", help="parameters and FLOPs (torch.utils.flop_counter)")
    p.add_argument("--size", type=int, default=224, help="input size for --details")
    p.add_argument("--in-chans", type=int, default=3)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="train + evaluate + report DermaMNIST at 28 px on the shared data")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HybridMedNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last completed checkpoint is intact; continue with `hybridmednet train ... --resume`",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
