"""Cohorts: geometry, synthetic subjects, readers, the Zarr cohort store and torch datasets."""
