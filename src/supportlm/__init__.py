"""supportlm: customer-support data -> fine-tuned, quantized, served small LM, with every number in reports/."""
__version__ = "0.1.0"
