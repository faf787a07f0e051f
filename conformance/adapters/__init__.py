"""Ready adapters for real optimizer libraries, one module per framework (imported lazily):

* :mod:`adabelief_conformance.adapters.torch`: ``TorchOptimizer``, any ``torch.optim.Optimizer``;
* :mod:`adabelief_conformance.adapters.optax`: ``OptaxTransformation``, any optax
  ``GradientTransformation`` factory;
* :mod:`adabelief_conformance.adapters.keras`: ``KerasOptimizer``, Keras optimizers (TF 2.15's
  legacy optimizers and Keras 3);
* :mod:`adabelief_conformance.adapters.libraries`: the known AdaBelief libraries, ready
  configured (targets ``library:NAME``).

Each skips (never errors) a case its library cannot express, saying why.
"""
