"""MedMNIST ``.npz`` files: find ``<root>/<flag>[_<size>].npz``, download and MD5-check if absent.

Works unchanged on the official files (keys ``{train,val,test}_{images,labels}``). 3D flags
(``*mnist3d``, volumes ``(N, D, H, W)``) become 2.5D images: the three central orthogonal slices
as three channels, so a 2D network can use them.
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
# MD5s of the 64/128/224 files are not listed here: pass ``md5`` in the config to check them.
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
    "adrenalmnist3d": {"md5": "bbd3c5a5576322bc4cdfea780653b1ce", "labels": ["normal", "hyperplasia"]},
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
    md5 = cfg.md5 if cfg.url else (cfg.md5 or (info.get("md5") if cfg.size == 28 else None))
    download_npz(cfg.url or _ZENODO.format(name=name), path, md5)
    return path


def volumes_to_orthogonal_slices(volumes: np.ndarray) -> np.ndarray:
    """(N, D, H, W) -> (N, H, W, 3): the central axial, coronal and sagittal slices."""
    n, d, h, w = volumes.shape
    if not (d == h == w):
        raise DataError(f"3D volumes must be cubic to stack orthogonal slices, got {volumes.shape}")
    axial = volumes[:, d // 2]
    coronal = volumes[:, :, h // 2]
    sagittal = volumes[:, :, :, w // 2]
    stacked = np.stack([axial, coronal, sagittal], axis=-1)
    if stacked.dtype != np.uint8:
        lo, hi = float(stacked.min()), float(stacked.max())
        stacked = np.round((stacked - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    return stacked


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
def medmnist_table(cfg) -> SampleTable:
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
        images = volumes_to_orthogonal_slices(images)
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
