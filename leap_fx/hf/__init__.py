"""Hugging Face models: ``models.py`` (loading folders safely: float32, no remote code, named errors),
``inputs.py`` (example inputs of any model), ``tasks.py`` (Auto class names by task, no torch),
``gguf.py`` (GGUF files converted once and cached; the embedded default LM)."""
