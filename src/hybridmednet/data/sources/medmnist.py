"""MedMNIST ``.npz`` files: find ``<root>/<flag>[_<size>].npz``, download and MD5-check if absent.

Works unchanged on the official files (keys ``{train,val,test}_{images,labels}``). 3D flags
(``*mnist3d``, volumes ``(N, D, H, W)``) are returned as ``(N, D, H, W, 1)`` volumes: read natively
with ``data.spatial_dims=3``, or as 2.5D images (the three central orthogonal slices as three
channels) by a 2D network (``data/materialize.py``). The 3D files at 28 and 64 voxels are
MD5-checked against the official values.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from hybridmednet.data.sources import register_source
from hybridmednet.data.table import SPLITS, SampleTable
from hybridmednet.errors import DataError
from hybridmednet.paths import data_root_hint

_ZENODO = "https://zenodo.org/records/10519652/files/{name}?download=1"

# Label names and MD5s of the official 28-px files (MedMNIST v2/v3 ``medmnist/info.py``).
# The 3D flags list their 64-voxel files' MD5s too; the 2D 64/128/224 files are not listed: pass
# ``md5`` in the config to check them.
MEDMNIST_INFO: dict[str, dict] = {
    "pathmnist": {"md5": "a8b06965200029087d5bd730944a56c1", "labels": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]},
    "chestmnist": {"md5": "02c8a6516a18b556561a56cbdd36c4a8", "multilabel": True, "labels": ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"]},
    "dermamnist": {"md5": "0744692d530f8e62ec473284d019b0c7", "labels": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]},
    "octmnist": {"md5": "c68d92d5b585d8d81f7112f81e2d0842", "labels": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"]},
    "pneumoniamnist": {"md5": "28209eda62fecd6e6a2d98b1501bb15f", "labels": ["normal", "pneumonia"]},
    "retinamnist": {"md5": "bd4c0672f1bba3e3a89f0e4e876791e4", "labels": ["0", "1", "2", "3", "4"]},
    "breastmnist": {"md5": "750601b1f35ba3300ea97c75c52ff8f6", "labels": ["malignant", "normal, benign"]},
    "bloodmnist": {"md5": "7053d0359d879ad8a5505303e11de1dc", "labels": ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte", "neutrophil", "platelet"]},
    "tissuemnist": {"md5": "ebe78ee8b05294063de985d821c1c34b", "labels": ["collecting duct, connecting tubule", "distal convoluted tubule", "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes", "podocytes", "proximal tubule segments", "thick ascending limb"]},
    "organamnist": {"md5": "866b832ed4eeba67bfb9edee1d5544e6", "labels": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"]},
    "organcmnist": {"md5": "0afa5834fb105f7705a7d93372119a21", "labels": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"]},
    "organsmnist": {"md5": "e5c39f1af030238290b9557d9503af9d", "labels": ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"]},
    "adrenalmnist3d": {"md5": "bbd3c5a5576322bc4cdfea780653b1ce", "md5_64": "17721accfe9fb005146a47d33bc54b2f", "labels": ["normal", "hyperplasia"]},
    "fracturemnist3d": {"md5": "6aa7b0143a6b42da40027a9dda61302f", "md5_64": "f01d7e6316aedf4210da0da5b7437b42", "labels": ["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"]},
    "nodulemnist3d": {"md5": "8755a7e9e05a4d9ce80a24c3e7a256f3", "md5_64": "c47c5b7d457bf6332200d2ea6d64ecd8", "labels": ["benign", "malignant"]},
    "organmnist3d": {"md5": "a0c5a1ff56af4f155c46d46fbb45a2fe", "md5_64": "58a2205adf14a9d0a189cb06dc78bf10", "labels": ["liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart", "lung-right", "lung-left", "spleen", "pancreas"]},
    "synapsemnist3d": {"md5": "1235b78a3cd6280881dd7850a78eadb6", "md5_64": "43bd14ebf3af9d3dd072446fedc14d5e", "labels": ["inhibitory synapse", "excitatory synapse"]},
    "vesselmnist3d": {"md5": "b41fd4f7e7e2feedddb201585ecafa1b", "md5_64": "6bb274a8846e1097066dcd64e2c4520f", "labels": ["vessel", "aneurysm"]},
}


def npz_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download_npz(url: str, target: Path, md5: str | None) -> None:
    """Download to a temporary name, check the MD5, then move into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".npz.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"{target}: not found and the download from {url} failed ({exc}); put the file there, "
                        f"set data.source.root, or {data_root_hint()}") from None
    got = md5_file(partial)
    if md5 is not None and got != md5:
        partial.unlink(missing_ok=True)
        raise DataError(f"{url}: MD5 {got} does not match the expected {md5}; the download is corrupt or "
                        "not the official file. Try again, or set data.source.md5 for a mirror")
    partial.replace(target)


def find_npz(cfg) -> Path:
    name = npz_name(cfg.flag, cfg.size)
    path = Path(cfg.root) / name
    if path.exists():
        return path
    if not cfg.download:
        raise DataError(f"{path}: file not found; {data_root_hint()}, set data.source.root, or set "
                        "data.source.download=true to fetch the official file")
    info = MEDMNIST_INFO.get(cfg.flag, {})
    md5 = cfg.md5 if cfg.url else (cfg.md5 or info.get("md5" if cfg.size == 28 else f"md5_{cfg.size}"))
    download_npz(cfg.url or _ZENODO.format(name=name), path, md5)
    return path


def _read_split(data, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    keys = (f"{split}_images", f"{split}_labels")
    missing = [k for k in keys if k not in data.files]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)} (found: {', '.join(data.files) or 'none'}); "
                        "a MedMNIST npz needs train/val/test _images and _labels")
    images, labels = data[keys[0]], data[keys[1]]
    if len(images) != len(labels):
        raise DataError(f"{path}: {keys[0]} has {len(images)} rows but {keys[1]} has {len(labels)}")
    return images, labels


@register_source("medmnist")
def medmnist_table(cfg, spatial_dims: int = 2) -> SampleTable:
    """Volumes are returned as volumes whatever ``spatial_dims`` (materialize reads them)."""
    path = find_npz(cfg)
    try:
        data = np.load(path)
    except Exception as exc:  # zipfile/pickle errors: the file is not an npz
        raise DataError(f"{path}: not a readable .npz ({exc}); re-download it") from None
    with data:
        parts = [_read_split(data, path, split) for split in SPLITS]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if images.ndim == 4 and images.shape[-1] not in (1, 3):
        images = images[..., None]  # volumes (N, D, H, W, 1)
    info = MEDMNIST_INFO.get(cfg.flag, {})
    multilabel = bool(info.get("multilabel")) or (labels.ndim == 2 and labels.shape[1] > 1)
    if multilabel:
        targets = labels.astype(np.float32)
        n_classes = labels.shape[1]
    else:
        targets = labels.reshape(-1).astype(np.int64)
        n_classes = int(targets.max()) + 1
    class_names = info.get("labels") or [str(i) for i in range(n_classes)]
    if len(class_names) < n_classes:
        raise DataError(f"{path}: labels go up to {n_classes - 1} but {cfg.flag} has {len(class_names)} classes")
    splits = np.concatenate([np.full(len(p[0]), s) for s, p in zip(SPLITS, parts)])
    ids = [f"{s}/{i}" for s, p in zip(SPLITS, parts) for i in range(len(p[0]))]
    return SampleTable(ids=ids, class_names=list(class_names), targets=targets, multilabel=multilabel,
                       source=str(path), images=images, splits=splits)
