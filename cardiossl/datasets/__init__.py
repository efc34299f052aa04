"""Cohorts: geometry, records, readers, resampling, the Zarr cohort store, splits and torch datasets.

The data room: it imports only ``cardiossl.registry`` (readers register there), never models,
pretexts or the platform.
"""
