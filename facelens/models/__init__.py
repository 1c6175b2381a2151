"""Model wrappers: one small class per model file and task, plus the manifest of known files.

Nothing here loads a model at import time; wrappers open their ONNX/dlib files when constructed.
"""
