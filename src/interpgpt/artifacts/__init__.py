"""A trained model's files: their names, loading from any form, conversion, export.

`names` defines every file name once; `load` reads a run dir, an export dir or a bundle
(safetensors, or `torch.load(weights_only=True)`: never unpickled code); `convert` maps
TaskGPT weights to TransformerLens and Hugging Face Llama layouts and back; `export`
writes all forms with a model card (`modelcard`). Writing depends on loading, never the
reverse.
"""
