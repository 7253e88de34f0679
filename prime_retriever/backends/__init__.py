"""Inference backends for the predictor: the interface and input checks, the eager and fast torch paths, ONNX."""
