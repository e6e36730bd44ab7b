"""Classifiers over catalog feature tables, tracked in MLflow: training (``train``), batch inference (``inference``).

Features come from tables (``ops.lightcurves`` writes them), labels from a column or another table; every model
points back to the exact table versions it learned from, and every classified table to the model version used.
"""

from .inference import classify
from .train import TrainResult, train_classifier

__all__ = ["TrainResult", "classify", "train_classifier"]
