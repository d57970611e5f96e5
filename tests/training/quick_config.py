"""The settings the tiny training runs of the loop and distillation tests share."""


def quick_config(config_class, **settings):
    """A `config_class` for a quick run: no evals or checkpoints unless asked, in float32 (tests
    compare runs to 1e-4, beyond bf16, the default where it is native; the bf16 tests ask for
    True or "auto"); `settings` over that."""
    defaults = dict(lr=3e-3, batch_size=8, eval_every=0, checkpoint_every=0, bf16=False)
    return config_class(**{**defaults, **settings})
