"""Reading the data a ``sepal run`` configuration describes."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

import sepal_tl as sepal


def load_data(data: dict[str, Any]) -> AnnData:
    """One AnnData with every slide of the ``[data]`` section (``obs["library_id"]`` names the slides)."""
    reader = data["reader"]
    if reader == "her2st":
        return sepal.datasets.her2st(data.get("sections"), path=data.get("path"))
    if reader == "synthetic":
        return sepal.datasets.synthetic(n_slides=data.get("n_slides", 3), random_state=data.get("seed", 0))
    slides = []
    for slide in data["slides"]:
        if reader == "files":
            slides.append(
                sepal.io.read_anndata(slide["path"], library_id=slide["library_id"], table_key=slide.get("table_key"))
            )
        elif reader == "visium":
            slides.append(
                sepal.io.read_visium(
                    slide["path"], library_id=slide["library_id"], fullres_image=slide.get("fullres_image")
                )
            )
        else:
            slides.append(
                sepal.io.read_st(
                    slide["counts"],
                    slide["spots"],
                    slide.get("image"),
                    library_id=slide["library_id"],
                    patient=slide.get("patient"),
                )
            )
    return slides[0] if len(slides) == 1 else sepal.io.concat(slides)
