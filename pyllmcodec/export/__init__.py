"""What builds model bundles (build time; needs ``onnx``, and torch or
transformers for some sources): the ONNX step/forward graph builders
(:mod:`.onnx_graph`, :mod:`.llama_graph`), the ByteLM exporter
(:mod:`.bytelm`, ``python -m pyllmcodec.export.bytelm``), the Hugging Face
converter behind ``pyllmcodec export`` (:mod:`.hf`) and tiny random bundles
for tests (:mod:`.testing`).  Nothing at run time imports this package except
the first use of a model that is converted on demand (SmolLM2's GGUF)."""
