"""Fitting: an engine on the GPU it was placed on (pure, no I/O).

Between sizing (what a server needs) and placement (which GPU it gets): given the budget and the GPU,
what the engine will do there (vLLM's utilization and KV cache, llama.cpp's layers and context).
Imports sizing, never placement.
"""
