"""Datasets: download, decode and split, one module per dataset."""
