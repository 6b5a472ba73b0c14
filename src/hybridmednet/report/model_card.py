"""A model card (Mitchell et al., 2019) filled from the run's own facts, not boilerplate claims."""

from __future__ import annotations

from html import escape


def model_card(a: dict) -> str:
    cfg, d, test = a["config"], a["data_summary"], a["test"]
    m, ci = test["metrics"], test["ci95"]
    headline = ", ".join(f"{k} {m[k]:.3f} [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" for k in ci)
    leak = d.get("leakage", {})
    limits = [
        f"Trained and tested on one data source ({escape(d['source'])}); performance on other scanners, sites, "
        "populations or image sizes is unknown and must be measured before any use.",
        f"Input size {cfg['data']['image_size']} px: fine detail visible to a clinician is lost at this resolution.",
    ]
    if "groups" in leak and leak["groups"]["n_crossing"]:
        limits.append(f"{leak['groups']['n_crossing']} patient/lesion ids occur in more than one split of this data set, "
                      "so the test metrics are optimistic compared with truly unseen patients.")
    elif "groups" not in leak:
        limits.append("The data carries no patient or lesion ids, so leakage between splits could not be ruled out.")
    if a["subgroups"] and a["subgroups"]["flagged"]:
        limits.append(f"Performance differs across subgroups: {escape(', '.join(a['subgroups']['flagged']))} (see Subgroups).")
    counts = d["class_counts"].get("train", [])
    if counts and max(counts) > 10 * max(min(counts), 1):
        limits.append("Classes are strongly imbalanced; per-class sensitivity for rare classes is lower and less certain.")
    rows = [
        ("Model", f"{escape(a['model'])}, {a['train_summary']['parameters'] / 1e6:.2f}M parameters, trained "
                  f"{a['train_summary']['epochs_run']} epochs; checkpoint chosen on validation {escape(cfg['train']['monitor'])}."),
        ("Intended use", "Research on medical image classification methods: benchmarking, method comparison and teaching. "
                         "Not a medical device; not for diagnosis, triage or any decision about a patient."),
        ("Data", f"{escape(d['source'])}; classes {escape(', '.join(d['class_names']))}; images per split {escape(str(d['n']))}."),
        ("Metrics (test, 95% bootstrap CI)", escape(headline)),
        ("Calibration", f"temperature {a['calibration']['temperature']:.2f} (fitted on val); test ECE after scaling "
                        f"{a['calibration']['test_after']['ece']:.3f}."),
        ("Limitations", "<ul>" + "".join(f"<li>{x}</li>" for x in limits) + "</ul>"),
        ("Ethical considerations", "Errors fall unequally on patient groups and on rare diagnoses; a missed malignancy is "
                                   "costlier than a false alarm. Dermoscopy data sets over-represent light skin types, and "
                                   "metadata such as sex, age and body site describe only part of that variation. Any "
                                   "clinical use needs prospective validation, human oversight, and the data's licence "
                                   "(HAM10000/DermaMNIST: CC BY-NC 4.0) permits non-commercial research only."),
    ]
    return "<div class='card'>" + "".join(f"<h3>{k}</h3><p>{v}</p>" for k, v in rows) + "</div>"
