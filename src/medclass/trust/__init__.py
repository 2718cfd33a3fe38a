"""Trustworthy outputs: calibrated probabilities (temperature and vector scaling), conformal prediction sets
and referral of uncertain cases."""
