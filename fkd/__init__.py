"""fkd: from nothing to a scored Kaggle submission for Facial Keypoints Detection.

    $ fkd practice --out /tmp/p && fkd data --data-dir /tmp/p
"""
import os

__version__ = "0.1.0"

# Offline by design: no hub look-ups for timm weights, no PyPI version check from albumentations.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
