"""Quantization: GGUF via llama.cpp (gguf.py), bitsandbytes/torchao (torch_quant.py), one comparison table
(compare.py) and the quantize stage (run.py)."""
