"""Datasets: the MedMNIST catalog, finding and downloading files, loading arrays."""
