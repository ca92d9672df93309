"""Robustness: image corruptions (ImageNet-C), perturbations of other inputs, and their evaluation."""
