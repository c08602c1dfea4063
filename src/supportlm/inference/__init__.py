"""Inference, below every stage that decodes: the HF and GGUF engines, prompt/reply token ids, threads.

Imports nothing above it (config, data, train, evaluate, quantize, serve, bench); tests/unit/test_imports.py
holds that.
"""
