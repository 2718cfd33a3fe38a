"""Explanations: saliency maps from several methods, and the checks that tell a faithful map from a pretty one."""
