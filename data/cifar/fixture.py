"""A tiny CIFAR-100 in the real ``cifar-100-python/{train,test,meta}`` pickle format.

Files carry the keys, dtypes and shapes of the real archive (``data`` uint8 (N, 3072) in
channel-planar order, ``fine_labels``/``coarse_labels`` lists of int, ``filenames``, ``batch_label``;
``meta`` with the 100 fine and 20 coarse class names). Each class gets its own smooth colour
pattern plus noise, so a small network can fit the images (the overfit test needs a signal).

torchvision checks the md5 of every file against the real archive's, which a fixture cannot match.
The writer therefore also records its own md5s in ``fixture_md5.json``; ``data.cifar`` verifies a
fixture against that manifest (an edited or truncated file still fails) and real data against
torchvision's checksums as usual.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np

BASE_FOLDER = "cifar-100-python"
MANIFEST = "fixture_md5.json"

FINE_LABEL_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower "
    "sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
    "willow_tree wolf woman worm"
).split()
COARSE_LABEL_NAMES = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things "
    "large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals "
    "non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2"
).split()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _class_templates(rng: np.random.Generator) -> np.ndarray:
    """One smooth 32x32 colour pattern per class: (100, 32, 32, 3) float in [0, 255]."""
    coarse = rng.uniform(0, 255, size=(100, 4, 4, 3))
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)


def _split(rng: np.random.Generator, templates: np.ndarray, n: int, name: str) -> dict:
    fine = np.arange(n) % 100
    noise = rng.normal(0, 20, size=(n, 32, 32, 3))
    images = np.clip(templates[fine] + noise, 0, 255).astype(np.uint8)
    return {
        "filenames": [f"fixture_{name}_{i:05d}.png" for i in range(n)],
        "batch_label": f"{name}ing batch 1 of 1" if name == "train" else "testing batch 1 of 1",
        "fine_labels": fine.tolist(),
        "coarse_labels": (fine // 5).tolist(),  # synthetic: the real fine-to-coarse map is not needed
        "data": images.transpose(0, 3, 1, 2).reshape(n, 3072),  # R plane, G plane, B plane per row
    }


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` (+ md5 manifest); return ``root``."""
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train={n_train} and n_test={n_test} must both be at least 1.")
    folder = Path(root) / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = _class_templates(rng)
    contents = {
        "train": _split(rng, templates, n_train, "train"),
        "test": _split(rng, templates, n_test, "test"),
        "meta": {"fine_label_names": FINE_LABEL_NAMES, "coarse_label_names": COARSE_LABEL_NAMES},
    }
    for name, obj in contents.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    manifest = {name: _md5(folder / name) for name in contents}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return Path(root)


def break_cifar100(root: Path) -> dict[str, str]:
    """Plant one defect per file in the fixture ``write_cifar100(root)`` wrote: one label changed in
    ``train`` (a valid pickle; md5 only), ``test`` cut short (md5 and unpickling); return {path: phrase its report contains}."""
    folder = Path(root) / BASE_FOLDER
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="latin1")
    train["fine_labels"][0] = (train["fine_labels"][0] + 1) % 100  # one wrong label: only the md5 tells
    with open(folder / "train", "wb") as f:
        pickle.dump(train, f, protocol=2)
    test = (folder / "test").read_bytes()
    (folder / "test").write_bytes(test[: len(test) // 2])
    return {str(folder / "train"): "has md5", str(folder / "test"): "is not a readable pickle"}
