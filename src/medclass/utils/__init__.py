"""Small helpers shared across medclass: atomic file writes and seeding."""
