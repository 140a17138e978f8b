"""Baselines that make training data without the loop: EDA, AugGPT (augment every seed), more real data."""
