"""The REST service and web page around the Predictor (``medclass serve``)."""
