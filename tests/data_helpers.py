"""Small learnable datasets written to disk for the file-dataset tests: the 8x8 digits as uint8
images, saved as .npz and as Hugging Face datasets (no download anywhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedgossip.tasks.data import load_raw


def digit_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` digits as (count, 8, 8) uint8 images (0..255) and int64 labels."""
    x, y = load_raw("digits")
    return (x[:count] * 255 / 16).round().astype(np.uint8).reshape(-1, 8, 8), y[:count].copy()


def save_hf_digits(folder: Path, count: int = 600, test: int = 0, *, parquet: bool = False) -> Path:
    """The digits as a Hugging Face dataset (columns "image": Image, "label": ClassLabel): a
    DatasetDict saved with save_to_disk (a "test" split of the last `test` images if test > 0;
    a bare Dataset if test == 0), or one parquet file per split with `parquet`."""
    import datasets

    x, y = digit_images(count)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    full = datasets.Dataset.from_dict({"image": list(x), "label": y.tolist()}, features=features)
    splits = {"train": full.select(range(count - test))}
    if test:
        splits["test"] = full.select(range(count - test, count))
    if parquet:
        folder.mkdir(parents=True, exist_ok=True)
        for name, split in splits.items():
            split.to_parquet(str(folder / f"{name}.parquet"))
    elif test:
        datasets.DatasetDict(splits).save_to_disk(str(folder))
    else:
        splits["train"].save_to_disk(str(folder))
    return folder
