"""The PyTorch networks (training, export checks and the PyTorch backend):
:mod:`.bytelm` (the default model's architecture) and :mod:`.llama` (SmolLM2
and relatives).  They import nothing else of pyllmcodec, so training code and
the backends can both build on them."""
