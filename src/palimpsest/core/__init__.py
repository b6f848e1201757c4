from .errors import ConfigError, DataError, LeakageError, PalimpsestError, SpecError, UnknownNameError
from .registry import (DATASETS, KINDS, METRICS, MODELS, SCENARIOS, STRATEGIES, UNLEARNERS, Registry,
                       list_methods, registry)
from .seeding import configure_torch, derive_seed, generator, pick_device, seed_everything

__all__ = ["ConfigError", "DataError", "LeakageError", "PalimpsestError", "SpecError", "UnknownNameError", "DATASETS", "KINDS",
           "METRICS", "MODELS", "SCENARIOS", "STRATEGIES", "UNLEARNERS", "Registry", "list_methods",
           "registry", "configure_torch", "derive_seed", "generator", "pick_device", "seed_everything"]
