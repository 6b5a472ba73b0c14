"""Training-time model transforms: pruning (magnitude, channel) and quantization-aware training.

They change the model a run trains, so they live with the engine; ``deploy/`` only exports,
quantizes and measures finished runs.
"""
