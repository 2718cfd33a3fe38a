"""Classical baselines: HOG, LBP, dense SIFT and ORB features with linear SVMs, as medclass models."""
