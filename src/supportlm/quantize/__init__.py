"""Quantization: GGUF via llama.cpp (gguf.py), bitsandbytes/GPTQ (torch_quant.py), one comparison table
(compare.py) and the quantize stage (run.py)."""
