"""The second stage: NeuMF re-ranks each user's top candidates from the FM's search.

``ncf`` (the model, its training and artifact) and ``entry`` (the SageMaker script-mode entry
point) import nothing from topx: they are shipped as they are to SageMaker's PyTorch container.
The rest of the package wires them into the run. PyTorch is imported only by those modules.
"""
