"""Backends that run a bundle: ONNX Runtime (the main one), llama.cpp (on the bundle's GGUF), and a small
numpy reference forward pass that is the readable spec of the model and is used in tests."""
