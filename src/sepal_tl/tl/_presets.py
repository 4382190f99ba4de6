"""Hyper-parameter presets of ``sepal.tl.fit``."""

from __future__ import annotations

from types import MappingProxyType

#: ``{preset: {"encoder": fit_encoder options, "spatial": fit_spatial options}}``.
#: ``paper_visium`` / ``paper_stnet`` are the paper's Table 1 settings (docs/reproduce.md, "Hyper-parameters"): the
#: Visium model (GCNConv, concatenated encoding, 1536 -> 512 pre-MLP, 512 -> 256 -> 128 graph layers, then genes) and
#: the STNet model (GraphConv, summed encoding, 768 -> 256, then genes); our heads always end in a linear layer to the
#: genes without activation. ``paper_stnet`` keeps the configured encoder learning rate of 0.01, which looks high for
#: fine-tuning a ViT. ``cpu`` trains the synthetic data in minutes on 2 cores: a tiny ViT from scratch on 64-px patches.
PRESETS = MappingProxyType(
    {
        "paper_visium": {
            "encoder": {
                "backbone": "vit_base_patch16_224",
                "pretrained": True,
                "patch_size": 224,
                "patch_scale": 1.0,
                "epochs": 50,
                "batch_size": 320,
                "lr": 1e-4,
            },
            "spatial": {
                "n_hops": 1,
                "operator": "GCNConv",
                "aggregation": "concat",
                "pre": (512,),
                "hidden": (256, 128),
                "post": (),
                "pooling": "sag",
                "epochs": 300,
                "batch_size": 256,
                "lr": 1e-5,
            },
        },
        "paper_stnet": {
            "encoder": {
                "backbone": "vit_base_patch16_224",
                "pretrained": True,
                "patch_size": 224,
                "patch_scale": 1.0,
                "epochs": 50,
                "batch_size": 128,
                "lr": 1e-2,
            },
            "spatial": {
                "n_hops": 1,
                "operator": "GraphConv",
                "aggregation": "sum",
                "pre": (),
                "hidden": (256,),
                "post": (),
                "pooling": "sag",
                "epochs": 100,
                "batch_size": 256,
                "lr": 1e-4,
            },
        },
        "cpu": {
            "encoder": {
                "backbone": "vit_tiny_patch16_224",
                "pretrained": False,
                "patch_size": 64,
                "patch_scale": 1.0,
                "epochs": 10,
                "batch_size": 64,
                "lr": 1e-3,
            },
            "spatial": {
                "n_hops": 1,
                "operator": "GraphConv",
                "aggregation": "sum",
                "pre": (),
                "hidden": (128,),
                "post": (),
                "pooling": "sag",
                "epochs": 40,
                "batch_size": 128,
                "lr": 1e-3,
            },
        },
    }
)
