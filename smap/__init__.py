"""smap: speech LLMs the SpeechMapper way.

Stage 1 maps frozen speech-encoder features onto an LLM's input embeddings without the LLM;
Stage 2 attaches the mapper to the frozen LLM in about a thousand steps.
"""

__version__ = "0.1.0"
