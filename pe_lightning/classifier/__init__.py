"""Downstream classifiers trained on synthetic data."""
