"""Deployment: ONNX export with parity checks and int8 quantization; the ONNX Runtime engine of the Predictor."""
