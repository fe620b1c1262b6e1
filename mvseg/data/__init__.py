"""Datasets, the shared CompressedVideoDataModule, the synthetic street dataset, the cache."""

from mvseg.data.datamodule import CompressedVideoDataModule, SyntheticSpec

__all__ = ["CompressedVideoDataModule", "SyntheticSpec"]
