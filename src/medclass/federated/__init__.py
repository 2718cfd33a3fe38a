"""Federated learning on Flower: partitions, aggregation, the client's local training, the server's rounds."""
