"""Readers for image files. Heavy libraries are imported lazily, inside the reader that needs them."""
